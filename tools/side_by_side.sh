#!/usr/bin/env bash
# Side by side with PyTorch, as a user sees it: the same 40-case phantom, the same preprocessing and fold, the
# same recipe (composer-2d, batch 64, RAdam 1e-3, Composer's augmentations, 2 threads), the same minutes of
# WALL CLOCK each, one run after the other:
#   - SwiftUNet: the plain default command, `unet train --data PRE --fold 0 -o RUN` (automatic validation
#     cadence, checkpoints), stopped by SIGINT when the minutes are up (it saves and leaves after the step);
#   - PyTorch: tools/torch_train.py with no validation at all (channels-last, its faster layout), stopped the same
#     way, started from SwiftUNet's initial weights.
# Then both final states (the last weights) segment the raw validation cases with `unet predict` and are scored
# by `unet evaluate`; the summary gives steps, scores and where SwiftUNet's wall clock went.
#
#   tools/side_by_side.sh OUT [MINUTES]      (default 40)
#
# Needs the release build (swift build -c release) and PyTorch (pip install "torch==2.13.0+cpu" safetensors
# scipy). Takes about 2 x MINUTES + 5 minutes. Nothing else should run on the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/side_by_side.sh OUT [MINUTES]}
minutes=${2:-40}
unet=$(pwd)/.build/release/unet
mkdir -p "$out"
[ -d "$out/data" ] || "$unet" synth --cases 40 --seed 7 -o "$out/data"
[ -f "$out/pre2d/splits.json" ] || "$unet" preprocess --data "$out/data" -o "$out/pre2d" --dim 2

if [ ! -f "$out/swift/log.jsonl" ]; then
  timeout -s INT "${minutes}m" "$unet" train --data "$out/pre2d" --fold 0 -o "$out/swift" || [ $? -eq 124 ]
fi
# PyTorch starts from SwiftUNet's initial weights (unet train --seed 0 initialises exactly as unet init --seed 0).
[ -f "$out/init.safetensors" ] || "$unet" init --preset composer-2d --seed 0 -o "$out/init.safetensors"
if [ ! -f "$out/torch/final.safetensors" ]; then
  timeout -s INT "${minutes}m" python3 tools/torch_train.py --data "$out/pre2d" --fold 0 --out "$out/torch" --val-every 0 \
    --threads 2 --channels-last --init "$out/init.safetensors" --minutes 1e9 || [ $? -eq 124 ]
fi
"$unet" plot "$out/torch"

# The raw validation cases of fold 0 (images and labels), segmented by each final network and scored.
mkdir -p "$out/val" "$out/val-labels"
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
for case in json.load(open(f"{out}/pre2d/splits.json"))["folds"][0]["val"]:
    for folder, source in (("val", "imagesTr"), ("val-labels", "labelsTr")):
        link = f"{out}/{folder}/{case}.nii.gz"
        if not os.path.exists(link):
            os.symlink(os.path.abspath(f"{out}/data/{source}/{case}.nii.gz"), link)
PY
for run in swift torch; do
  model="$out/swift/checkpoint_last.safetensors"
  [ "$run" = torch ] && model="$out/torch/final.safetensors"
  "$unet" predict --model "$model" -i "$out/val" -o "$out/$run/pred" --overwrite
  "$unet" evaluate --gt "$out/val-labels" --pred "$out/$run/pred" -o "$out/$run/eval/summary.json" \
    --png "$out/$run/eval/png" --images "$out/val" --overwrite
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for run in ("swift", "torch"):
    log = [json.loads(l) for l in open(f"{out}/{run}/log.jsonl")]
    last = log[-1]
    summary = json.load(open(f"{out}/{run}/eval/summary.json"))
    print(f"{run:6s} steps {last['step']:4d}  training {last['trainingSeconds'] / 60:5.1f} min  "
          f"last validation Dice {next((r['validationDice'] for r in reversed(log) if 'validationDice' in r), float('nan')):6.2f}  "
          f"predict+evaluate Dice {summary['recipeDice']:6.2f}  "
          f"WT {summary['meanDice']['WT']:.3f} TC {summary['meanDice']['TC']:.3f} ET {summary['meanDice']['ET']:.3f}")
state = json.load(open(f"{out}/swift/state.json"))
t = state["time"]
print("swift wall clock %.1f min: training %.1f%%, data %.1f%%, validation %.1f%%, checkpoints and log %.1f%%" % (
    t["wall"] / 60, *(100 * t[k] / t["wall"] for k in ("training", "data", "validation", "checkpoint"))))
swift = [json.loads(l) for l in open(f"{out}/swift/log.jsonl")]
torch = {r["step"]: r["loss"] for r in (json.loads(l) for l in open(f"{out}/torch/log.jsonl"))}
print("loss at the same steps (swift / torch): " + ", ".join(
    f"{r['step']}: {r['loss']:.3f} / {torch[r['step']]:.3f}" for r in swift if r["step"] in torch and r["step"] % 10 == 0))
print("swift validations: " + ", ".join(f"step {r['step']}: {r['validationDice']:.2f}" for r in swift if "validationDice" in r))
PY
