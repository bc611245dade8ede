#!/usr/bin/env bash
# Runs the real `unet` binary on data it makes and checks its outputs and its errors on bad input.
set -euo pipefail
cd "$(dirname "$0")/.."
unet=$(pwd)/.build/release/unet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli-test FAILED: $*" >&2; exit 1; }

"$unet" synth --cases 5 --procedural --seed 3 --out "$tmp/data" >/dev/null 2>&1
[ -f "$tmp/data/dataset.json" ] && [ -f "$tmp/data/labelsTr/BRATS_005.nii.gz" ] || fail "synth wrote no dataset"
"$unet" synth --cases 1 --out "$tmp/data" >/dev/null 2>&1 && fail "synth overwrote an existing dataset"

info=$("$unet" info --json "$tmp/data/imagesTr/BRATS_001.nii.gz")
for key in '"shape":\[240,240,155,4\]' '"datatype":"float32"' '"orientation":"RAS"' '"spacing":\[1,1,1\]' '"min":0'; do
  echo "$info" | grep -q "$key" || fail "info --json lacks $key: $info"
done

"$unet" preprocess --data "$tmp/data" --out "$tmp/pre" --dim 2 >/dev/null 2>&1
[ -f "$tmp/pre/BRATS_003_x.npy" ] && [ -f "$tmp/pre/BRATS_003_meta.json" ] && [ -f "$tmp/pre/splits.json" ] || fail "preprocess outputs missing"
again=$("$unet" preprocess --data "$tmp/data" --out "$tmp/pre" --dim 2 2>/dev/null)
echo "$again" | grep -q "skipped 5" || fail "finished cases were not skipped: $again"

"$unet" convert "$tmp/data/labelsTr/BRATS_001.nii.gz" "$tmp/label.npy" >/dev/null
"$unet" convert "$tmp/label.npy" "$tmp/label.nii.gz" --like "$tmp/data/labelsTr/BRATS_001.nii.gz" >/dev/null
"$unet" info --json "$tmp/label.nii.gz" | grep -q '"shape":\[240,240,155\]' || fail "convert round trip lost the shape"
"$unet" convert "$tmp/label.npy" "$tmp/label.nii.gz" >/dev/null 2>&1 && fail "convert overwrote its output"

# Bad input: a clear error naming the file, exit status 1, no crash.
printf 'not a nifti file at all, just text padding padding padding padding' > "$tmp/bad.nii"
set +e
out=$("$unet" info "$tmp/bad.nii" 2>&1); status=$?
set -e
[ $status -eq 1 ] || fail "bad file: exit status $status"
echo "$out" | grep -q "bad.nii" || fail "bad file: error does not name the file: $out"
head -c 100000 "$tmp/data/imagesTr/BRATS_002.nii.gz" > "$tmp/cut.nii.gz"
set +e
out=$("$unet" info "$tmp/cut.nii.gz" 2>&1); status=$?
set -e
[ $status -eq 1 ] && echo "$out" | grep -q "cut.nii.gz" || fail "truncated gzip: $status $out"
echo "cli-test: all checks passed"
