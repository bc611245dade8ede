#!/usr/bin/env bash
# The side-by-side training comparison of issue 5: the same 40-case phantom, the same preprocessing and
# fold, the same recipe (composer-2d, batch 64, RAdam 1e-3, Composer's augmentations, 2 threads), each
# trained for the same budget of training time, by `unet train` and by tools/torch_train.py (PyTorch),
# one after the other; then both final networks segment the raw validation cases with `unet predict` and
# are scored by `unet evaluate`, and both curves are drawn by `unet plot`.
#
#   tools/side_by_side.sh OUT [MINUTES] [VAL_EVERY]      (defaults 40 and 40)
#
# Needs the release build (swift build -c release) and PyTorch (pip install "torch==2.13.0+cpu" safetensors
# scipy). Takes about 2 x (MINUTES + validation) minutes. Nothing else should run on the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/side_by_side.sh OUT [MINUTES] [VAL_EVERY]}
minutes=${2:-40}
every=${3:-40}
unet=$(pwd)/.build/release/unet
mkdir -p "$out"
[ -d "$out/data" ] || "$unet" synth --cases 40 --seed 7 --out "$out/data"
[ -f "$out/pre2d/splits.json" ] || "$unet" preprocess --data "$out/data" --out "$out/pre2d" --dim 2

"$unet" train --data "$out/pre2d" --fold 0 --out "$out/swift" --time-limit "$minutes" --val-every "$every" --threads 2
# PyTorch starts from SwiftUNet's initial weights (unet train --seed 0 initialises exactly as unet init --seed 0).
[ -f "$out/init.safetensors" ] || "$unet" init --preset composer-2d --seed 0 --out "$out/init.safetensors"
python3 tools/torch_train.py --data "$out/pre2d" --fold 0 --out "$out/torch" --minutes "$minutes" --val-every "$every" --threads 2 \
  --init "$out/init.safetensors"
"$unet" plot "$out/torch"

# The raw validation cases of fold 0, segmented by each final network and scored.
mkdir -p "$out/val"
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
for case in json.load(open(f"{out}/pre2d/splits.json"))["folds"][0]["val"]:
    link = f"{out}/val/{case}.nii.gz"
    if not os.path.exists(link):
        os.symlink(os.path.abspath(f"{out}/data/imagesTr/{case}.nii.gz"), link)
PY
for run in swift torch; do
  model="$out/$run/checkpoint_last.safetensors"
  [ "$run" = torch ] && model="$out/torch/final.safetensors"
  "$unet" predict --model "$model" -i "$out/val" -o "$out/$run/pred" --threads 2 --overwrite
  "$unet" evaluate --gt "$out/data/labelsTr" --pred "$out/$run/pred" -o "$out/$run/eval/summary.json" \
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
          f"validation Dice {last.get('validationDice', float('nan')):6.2f}  predict+evaluate Dice {summary['recipeDice']:6.2f}  "
          f"WT {summary['meanDice']['WT']:.3f} TC {summary['meanDice']['TC']:.3f} ET {summary['meanDice']['ET']:.3f}")
PY
