#!/usr/bin/env bash
# The main job so far, on data it makes itself: synthesize a small phantom dataset, look at one case,
# preprocess it for the 2D and 3D recipes, and time reading and preprocessing against gzip.
# Outputs go to demo/ (reused when run again: existing data is kept, finished cases are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
unet=.build/release/unet
[ -x "$unet" ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
mkdir -p demo
if [ ! -f demo/data/dataset.json ]; then
  "$unet" synth --cases 10 --out demo/data
fi
"$unet" info demo/data/imagesTr/BRATS_001.nii.gz
"$unet" preprocess --data demo/data --out demo/preprocessed-2d --dim 2
"$unet" preprocess --data demo/data --out demo/preprocessed-3d --dim 3
"$unet" bench io --file demo/data/imagesTr/BRATS_001.nii.gz
echo "outputs: demo/data (Decathlon layout), demo/preprocessed-2d, demo/preprocessed-3d"
