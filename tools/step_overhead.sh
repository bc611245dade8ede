#!/usr/bin/env bash
# Step time inside `unet train` against `unet bench train` at the same batch (2D batch 64, 3D batch 2),
# alternating twice, on a preprocessed folder of each dimension. In `unet train` a step is its training
# time plus the preparation of its batch, from the log's per-epoch time split, first epoch excluded (the
# bench also leaves out its first step); validation is kept out (--val-every beyond the run). The 3D folder
# should hold few cases (e.g. 10: 4 steps per epoch) so that several epochs fit.
#
#   tools/step_overhead.sh PRE2D PRE3D OUT [MINUTES]      (MINUTES of 2D training per run, default 3; 3D: +3)
#
# Needs the release build. Takes about 4 x (MINUTES + 4) minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
pre2d=${1:?usage: tools/step_overhead.sh PRE2D PRE3D OUT [MINUTES]}
pre3d=${2:?}
out=${3:?}
minutes=${4:-3}
unet=$(pwd)/.build/release/unet
mkdir -p "$out"
for round in 1 2; do
  for dim in 2 3; do
    if [ $dim = 2 ]; then preset=composer-2d; batch=64; pre=$pre2d; m=$minutes; else preset=nvidia-3d; batch=2; pre=$pre3d; m=$((minutes + 3)); fi
    "$unet" bench train --preset $preset --batch $batch --inference-batch 1 --steps 3 --rounds 1 --no-torch --json \
      > "$out/bench-$dim-$round.json"
    rm -rf "$out/train-$dim-$round"
    timeout -s INT "${m}m" "$unet" train --data "$pre" --preset $preset -o "$out/train-$dim-$round" \
      --val-every 100000 --epochs 100000 > "$out/train-$dim-$round.log" 2>&1 || [ $? -eq 124 ]
  done
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for dim in (2, 3):
    for rnd in (1, 2):
        bench = json.load(open(f"{out}/bench-{dim}-{rnd}.json"))
        b = next(r for r in bench["results"] if r["phase"] == "train")
        log = [json.loads(l) for l in open(f"{out}/train-{dim}-{rnd}/log.jsonl")]
        later = [(r, r["step"] - p["step"]) for p, r in zip(log, log[1:])]
        steps = sum(n for _, n in later)
        if steps == 0:
            print(f"{dim}D round {rnd}: fewer than 2 epochs, no figure"); continue
        training = sum(r["time"]["training"] for r, _ in later) / steps
        data = sum(r["time"]["data"] for r, _ in later) / steps
        inside = training + data
        print(f"{dim}D round {rnd}: bench train {b['seconds']:.2f} s/step (batch {b['batch']}); unet train {inside:.2f} s/step "
              f"over {steps} steps after the first epoch (training {training:.2f} + data {data:.3f}); ratio {inside / b['seconds']:.3f}")
PY
