#!/usr/bin/env bash
# Writes that fail: a file size limit, a full disk, a read-only folder, a missing parent. Each gives an error
# naming the path and what was being written; the previous checkpoint stays whole and --resume continues from it
# exactly. The full-disk and read-only checks mount small file systems in a private mount namespace (root only;
# otherwise they are skipped, and said so).
set -uo pipefail
cd "$(dirname "$0")/.."
unet=$(pwd)/.build/release/unet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "disk-test FAILED: $*" >&2; exit 1; }

"$unet" synth --cases 5 --procedural --seed 3 -o "$tmp/data" >/dev/null 2>&1 || fail "synth"
"$unet" preprocess --data "$tmp/data" -o "$tmp/pre" --dim 2 >/dev/null 2>&1 || fail "preprocess"
args=(--data "$tmp/pre" --batch 4 --filters 8,16,16,16,16 --lr 3e-3 --seed 5 --val-every 100 --checkpoint-every 0)
"$unet" train "${args[@]}" --epochs 4 -o "$tmp/straight" >/dev/null 2>&1 || fail "uninterrupted run"
"$unet" train "${args[@]}" --epochs 2 -o "$tmp/run" >/dev/null 2>&1 || fail "first 2 epochs"
cp "$tmp/run/checkpoint_last.safetensors" "$tmp/good.safetensors"
cp -r "$tmp/run" "$tmp/run2"  # the 2-epoch state, for the full-disk and read-only checks

# A file size limit (100 KiB; a checkpoint is ~650 KB): the checkpoint write of epoch 3 fails.
out=$( (ulimit -f 100; "$unet" train "${args[@]}" --epochs 4 --resume -o "$tmp/run") 2>&1); status=$?
[ $status -eq 1 ] || fail "past a file size limit: exit $status: $out"
grep -q "checkpoint_last.safetensors: writing the training state at step 3 failed" <<<"$out" && grep -q "File too large" <<<"$out" \
  || fail "no clear message past a file size limit: $out"
cmp -s "$tmp/run/checkpoint_last.safetensors" "$tmp/good.safetensors" || fail "the previous checkpoint changed"
ls -a "$tmp/run" | grep -q "\.tmp-" && fail "a temporary file stayed after the failed write"
"$unet" train "${args[@]}" --epochs 4 --resume -o "$tmp/run" >/dev/null 2>&1 || fail "resume after the failed write"
cmp -s "$tmp/run/checkpoint_last.safetensors" "$tmp/straight/checkpoint_last.safetensors" || fail "resume after a failed write ended elsewhere"
echo "file size limit: '$(grep -o 'writing the training state.*' <<<"$out" | cut -c1-120)...'; previous checkpoint intact, resumed exactly"

# A missing parent folder for a file output.
out=$("$unet" init --preset composer-2d -o "$tmp/no/such/folder/m.safetensors" 2>&1) && fail "init into a missing folder succeeded"
grep -q "$tmp/no/such/folder/m.safetensors" <<<"$out" && grep -q "No such file or directory" <<<"$out" || fail "missing parent: $out"
echo "missing parent folder: error names $tmp/no/such/folder/m.safetensors"

if [ "$(id -u)" -ne 0 ] || ! unshare -m true 2>/dev/null; then
  echo "disk-test: full-disk and read-only checks skipped (they mount file systems: root only)"
  echo "disk-test OK"
  exit 0
fi
mkdir -p "$tmp/small" "$tmp/ro"
export unet tmp
unshare -m bash -c '
  set -uo pipefail
  fail() { echo "disk-test FAILED: $*" >&2; exit 1; }
  args=(--data "$tmp/pre" --batch 4 --filters 8,16,16,16,16 --lr 3e-3 --seed 5 --val-every 100 --checkpoint-every 0)
  mount --make-rprivate / 2>/dev/null
  # A full disk: room for the 2-epoch run folder, not for another checkpoint beside it.
  mount -t tmpfs -o size=1500k tmpfs "$tmp/small" || fail "mount tmpfs"
  cp -r "$tmp/run2" "$tmp/small/run" || fail "copy into the small file system"
  out=$("$unet" train "${args[@]}" --epochs 4 --resume -o "$tmp/small/run" 2>&1); status=$?
  [ $status -eq 1 ] && grep -q "small/run/checkpoint_last.safetensors: writing the training state" <<<"$out" && grep -q "No space left on device" <<<"$out" \
    || fail "full disk: exit $status: $out"
  cmp -s "$tmp/small/run/checkpoint_last.safetensors" "$tmp/good.safetensors" || fail "full disk: the previous checkpoint changed"
  ls -a "$tmp/small/run" | grep -q "\.tmp-" && fail "full disk: a temporary file stayed"
  echo "full disk: error names the checkpoint and says No space left on device; previous checkpoint intact"
  # A read-only folder: training and prediction refuse, naming the path.
  mount -t tmpfs -o size=4m tmpfs "$tmp/ro" || fail "mount tmpfs"
  cp -r "$tmp/run2" "$tmp/ro/run" && mount -o remount,ro "$tmp/ro" || fail "read-only remount"
  out=$("$unet" train "${args[@]}" --epochs 4 --resume -o "$tmp/ro/run" 2>&1); status=$?
  [ $status -eq 1 ] && grep -q "ro/run" <<<"$out" && grep -q "Read-only file system" <<<"$out" || fail "read-only run folder: exit $status: $out"
  out=$("$unet" predict --model "$tmp/good.safetensors" -i "$tmp/data/imagesTr/BRATS_001.nii.gz" -o "$tmp/ro/pred" 2>&1); status=$?
  [ $status -eq 1 ] && grep -q "ro/pred" <<<"$out" && grep -q "Read-only file system" <<<"$out" || fail "read-only predict output: exit $status: $out"
  echo "read-only folder: train and predict fail naming the path (Read-only file system)"
' || exit 1
echo "disk-test OK"
