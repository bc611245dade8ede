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

# Evaluation of labels against themselves: perfect scores, summary files written, not overwritten.
ev=$("$unet" evaluate --gt "$tmp/data/labelsTr" --pred "$tmp/data/labelsTr" -o "$tmp/eval/summary.json" 2>/dev/null) || fail "evaluate: $ev"
echo "$ev" | grep -q "recipe Dice (Composer/NVIDIA metric): 100.00" || fail "evaluate self-comparison: $ev"
[ -f "$tmp/eval/summary.csv" ] || fail "evaluate wrote no CSV"
"$unet" evaluate --gt "$tmp/data/labelsTr" --pred "$tmp/data/labelsTr" -o "$tmp/eval/summary.json" >/dev/null 2>&1 && fail "evaluate overwrote its summary"

# The network: exact parameter counts, a forward, and steps on one batch that lower the loss.
"$unet" init --preset composer-2d --seed 1 --out "$tmp/m.safetensors" | grep -q "24,543,268 parameters" || fail "composer-2d parameter count"
"$unet" init --preset nvidia-3d --out "$tmp/m3.safetensors" | grep -q "31,192,868 parameters" || fail "nvidia-3d parameter count"
python3 - "$tmp" <<'PY'  # a (2, 4, 32, 32) float32 input and (2, 1, 32, 32) uint8 labels, standard library only
import math, struct, sys
def npy(path, descr, shape, data):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, ", ".join(map(str, shape)))
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data)
n = 2 * 4 * 32 * 32
npy(sys.argv[1] + "/x.npy", "<f4", (2, 4, 32, 32), struct.pack("<%df" % n, *[math.sin(i * 0.37) for i in range(n)]))
m = 2 * 32 * 32
npy(sys.argv[1] + "/y.npy", "|u1", (2, 1, 32, 32), bytes((i // 7) % 4 for i in range(m)))
PY
"$unet" forward --model "$tmp/m.safetensors" --input "$tmp/x.npy" --output "$tmp/logits.npy" | grep -q "logits 2x4x32x32" || fail "forward"
"$unet" step --model "$tmp/m.safetensors" --input "$tmp/x.npy" --target "$tmp/y.npy" --steps 4 --lr 1e-3 \
  --out "$tmp/m2.safetensors" --losses "$tmp/losses.json" >/dev/null 2>&1 || fail "step"
python3 -c "import json,sys; l=json.load(open(sys.argv[1])); sys.exit(0 if len(l) == 4 and l[-1] < l[0] else 1)" "$tmp/losses.json" \
  || fail "loss did not fall: $(cat "$tmp/losses.json")"
# Training: a run stopped after epoch 1 and resumed to epoch 2 ends with the same checkpoint as a run of 2.
train() { "$unet" train --data "$tmp/pre" --batch 2 --filters 8,16,16,16,16 --lr 3e-3 --seed 5 "$@" >/dev/null 2>&1; }
train --out "$tmp/runA" --epochs 2 || fail "train"
train --out "$tmp/runB" --epochs 1 || fail "train (first part)"
train --out "$tmp/runB" --epochs 1 && fail "train reused a run folder without --resume"
train --out "$tmp/runB" --epochs 2 --resume || fail "train --resume"
cmp -s "$tmp/runA/checkpoint_last.safetensors" "$tmp/runB/checkpoint_last.safetensors" || fail "resumed run differs from the uninterrupted one"
for f in config.json log.jsonl progress.png checkpoint_best.safetensors; do [ -f "$tmp/runA/$f" ] || fail "train wrote no $f"; done
"$unet" plot "$tmp/runA" -o "$tmp/replot.png" | grep -q "2 epochs" || fail "plot"

# Prediction on a raw case: a label file on the input's grid, then scored.
mkdir -p "$tmp/one" && cp "$tmp/data/imagesTr/BRATS_002.nii.gz" "$tmp/one/"
"$unet" predict --model "$tmp/runA" -i "$tmp/one" -o "$tmp/pred" --png --save-probabilities >/dev/null || fail "predict"
"$unet" info --json "$tmp/pred/BRATS_002.nii.gz" | grep -q '"shape":\[240,240,155\]' || fail "prediction shape"
"$unet" info --json "$tmp/pred/BRATS_002_probabilities.nii.gz" | grep -q '"shape":\[240,240,155,4\]' || fail "probabilities shape"
[ -f "$tmp/pred/BRATS_002.png" ] || fail "predict --png wrote no picture"
"$unet" evaluate --gt "$tmp/data/labelsTr" --pred "$tmp/pred" --png "$tmp/pictures" --images "$tmp/data/imagesTr" >/dev/null 2>&1 \
  || fail "evaluate a prediction"
[ -f "$tmp/pictures/BRATS_002.png" ] || fail "evaluate --png wrote no picture"

# 3D: patches, sliding-window validation and prediction, on the same raw case.
"$unet" preprocess --data "$tmp/data" --out "$tmp/pre3d" --dim 3 >/dev/null 2>&1 || fail "preprocess --dim 3"
"$unet" train --data "$tmp/pre3d" --preset nvidia-3d --filters 4,8,8,8 --patch 32,32,32 --epochs 1 --out "$tmp/run3d" >/dev/null 2>&1 \
  || fail "train nvidia-3d"
grep -q '"validationDice"' "$tmp/run3d/log.jsonl" || fail "3D run not validated"
"$unet" predict --model "$tmp/run3d" -i "$tmp/one" -o "$tmp/pred3d" >/dev/null || fail "predict 3D"
"$unet" info --json "$tmp/pred3d/BRATS_002.nii.gz" | grep -q '"shape":\[240,240,155\]' || fail "3D prediction shape"

# bf16: on a CPU with AVX512_BF16 the logits stay within bf16's rounding of fp32's; without it (or with
# it hidden) --precision bf16 is refused up front with the reason, exit status 64, nothing written.
if grep -qw avx512_bf16 /proc/cpuinfo; then
  "$unet" forward --precision bf16 --model "$tmp/m.safetensors" --input "$tmp/x.npy" --output "$tmp/logits_bf16.npy" >/dev/null \
    || fail "forward --precision bf16"
  python3 - "$tmp/logits.npy" "$tmp/logits_bf16.npy" <<'PY' || fail "bf16 logits are not within 2e-2 of fp32's"
import struct, sys
def floats(path):
    b = open(path, "rb").read(); n = struct.unpack("<H", b[8:10])[0]; d = b[10 + n:]
    return struct.unpack("<%df" % (len(d) // 4), d)
a, b = floats(sys.argv[1]), floats(sys.argv[2])
scale = max(abs(v) for v in a); diff = max(abs(x - y) for x, y in zip(a, b))
sys.exit(0 if 0 < diff <= 2e-2 * scale else 1)
PY
fi
set +e
out=$(CDNNL_NO_BF16=1 "$unet" forward --precision bf16 --model "$tmp/m.safetensors" --input "$tmp/x.npy" --output "$tmp/l3.npy" 2>&1); status=$?
set -e
[ $status -eq 64 ] && echo "$out" | grep -q "AVX512_BF16" && [ ! -e "$tmp/l3.npy" ] || fail "--precision bf16 without bf16: $status $out"
set +e
out=$("$unet" forward --model "$tmp/x.npy" --input "$tmp/x.npy" --output "$tmp/l2.npy" 2>&1); status=$?
set -e
[ $status -ne 0 ] && echo "$out" | grep -q "x.npy" || fail "a non-weight file as --model: $status $out"

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
# The kernel benchmark's report: JSON with the passes asked for (no layers: the FMA probe only); bad passes refused.
kb=$("$unet" bench kernels --limit 0 --passes 2 --json 2>/dev/null) || fail "bench kernels --limit 0: $kb"
echo "$kb" | grep -q '"passes":2' && echo "$kb" | grep -q '"kernels":\[\]' || fail "bench kernels JSON: $kb"
"$unet" bench kernels --passes 0 >/dev/null 2>&1 && fail "bench kernels accepted --passes 0"
echo "cli-test: all checks passed"
