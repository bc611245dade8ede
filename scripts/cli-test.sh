#!/usr/bin/env bash
# Runs the real `unet` binary on data it makes and checks its outputs and its errors on bad input.
set -euo pipefail
cd "$(dirname "$0")/.."
unet=$(pwd)/.build/release/unet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli-test FAILED: $*" >&2; exit 1; }

"$unet" synth --cases 5 --procedural --seed 3 -o "$tmp/data" >/dev/null 2>&1
[ -f "$tmp/data/dataset.json" ] && [ -f "$tmp/data/labelsTr/BRATS_005.nii.gz" ] || fail "synth wrote no dataset"
"$unet" synth --cases 1 -o "$tmp/data" >/dev/null 2>&1 && fail "synth overwrote an existing dataset"

info=$("$unet" info --json "$tmp/data/imagesTr/BRATS_001.nii.gz")
for key in '"shape":\[240,240,155,4\]' '"datatype":"float32"' '"orientation":"RAS"' '"spacing":\[1,1,1\]' '"min":0'; do
  echo "$info" | grep -q "$key" || fail "info --json lacks $key: $info"
done

"$unet" preprocess --data "$tmp/data" -o "$tmp/pre" --dim 2 >/dev/null 2>&1
[ -f "$tmp/pre/BRATS_003_x.npy" ] && [ -f "$tmp/pre/BRATS_003_meta.json" ] && [ -f "$tmp/pre/splits.json" ] || fail "preprocess outputs missing"
again=$("$unet" preprocess --data "$tmp/data" -o "$tmp/pre" --dim 2 2>/dev/null)
echo "$again" | grep -q "skipped 5" || fail "finished cases were not skipped: $again"

"$unet" convert "$tmp/data/labelsTr/BRATS_001.nii.gz" "$tmp/label.npy" >/dev/null
"$unet" convert "$tmp/label.npy" -o "$tmp/label.nii.gz" --like "$tmp/data/labelsTr/BRATS_001.nii.gz" >/dev/null
grep -q '"shape":\[240,240,155\]' <<<"$("$unet" info --json "$tmp/label.nii.gz")" || fail "convert round trip lost the shape"
"$unet" convert "$tmp/label.npy" "$tmp/label.nii.gz" >/dev/null 2>&1 && fail "convert overwrote its output"

# Evaluation of labels against themselves: perfect scores, summary files written, not overwritten.
ev=$("$unet" evaluate --gt "$tmp/data/labelsTr" --pred "$tmp/data/labelsTr" -o "$tmp/eval/summary.json" 2>/dev/null) || fail "evaluate: $ev"
echo "$ev" | grep -q "recipe Dice (Composer/NVIDIA metric): 100.00" || fail "evaluate self-comparison: $ev"
[ -f "$tmp/eval/summary.csv" ] || fail "evaluate wrote no CSV"
"$unet" evaluate --gt "$tmp/data/labelsTr" --pred "$tmp/data/labelsTr" -o "$tmp/eval/summary.json" >/dev/null 2>&1 && fail "evaluate overwrote its summary"

# The network: exact parameter counts, a forward, and steps on one batch that lower the loss.
grep -q "24,543,268 parameters" <<<"$("$unet" init --preset composer-2d --seed 1 -o "$tmp/m.safetensors")" || fail "composer-2d parameter count"
grep -q "31,192,868 parameters" <<<"$("$unet" init --preset nvidia-3d -o "$tmp/m3.safetensors")" || fail "nvidia-3d parameter count"
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
out=$("$unet" forward --model "$tmp/m.safetensors" --input "$tmp/x.npy" -o "$tmp/logits.npy") && echo "$out" | grep -q "logits 2x4x32x32" || fail "forward: $out"
"$unet" step --model "$tmp/m.safetensors" --input "$tmp/x.npy" --target "$tmp/y.npy" --steps 4 --lr 1e-3 \
  -o "$tmp/m2.safetensors" --losses "$tmp/losses.json" >/dev/null 2>&1 || fail "step"
python3 -c "import json,sys; l=json.load(open(sys.argv[1])); sys.exit(0 if len(l) == 4 and l[-1] < l[0] else 1)" "$tmp/losses.json" \
  || fail "loss did not fall: $(cat "$tmp/losses.json")"
# Training: a run stopped after epoch 1 and resumed to epoch 2 ends with the same checkpoint as a run of 2
# (a fixed validation cadence here; the checkpoints never depend on it).
train() { "$unet" train --data "$tmp/pre" --batch 2 --filters 8,16,16,16,16 --lr 3e-3 --seed 5 --val-every 1 "$@" >/dev/null 2>&1; }
train -o "$tmp/runA" --epochs 2 || fail "train"
train -o "$tmp/runB" --epochs 1 || fail "train (first part)"
train -o "$tmp/runB" --epochs 1 && fail "train reused a run folder without --resume"
train -o "$tmp/runB" --epochs 2 --resume || fail "train --resume"
cmp -s "$tmp/runA/checkpoint_last.safetensors" "$tmp/runB/checkpoint_last.safetensors" || fail "resumed run differs from the uninterrupted one"
for f in config.json log.jsonl progress.png checkpoint_best.safetensors; do [ -f "$tmp/runA/$f" ] || fail "train wrote no $f"; done
grep -q "2 epochs" <<<"$("$unet" plot "$tmp/runA" -o "$tmp/replot.png")" || fail "plot"
# One writer per run folder: while a run trains, a second `train --resume` on its folder is refused.
"$unet" train --data "$tmp/pre" -o "$tmp/runC" --batch 2 --filters 8,16,16,16,16 --epochs 100000 >/dev/null 2>&1 &
first=$!
for _ in $(seq 1 120); do [ -f "$tmp/runC/log.jsonl" ] && break; sleep 0.5; done
set +e
out=$("$unet" train --data "$tmp/pre" -o "$tmp/runC" --batch 2 --filters 8,16,16,16,16 --epochs 100000 --resume 2>&1); status=$?
set -e
kill -INT $first; wait $first || true
[ $status -eq 1 ] && echo "$out" | grep -q "in use" || fail "a second writer on a run folder: $status $out"

# Prediction on a raw case: a label file on the input's grid, then scored.
mkdir -p "$tmp/one" && cp "$tmp/data/imagesTr/BRATS_002.nii.gz" "$tmp/one/"
"$unet" predict --model "$tmp/runA" -i "$tmp/one" -o "$tmp/pred" --png --save-probabilities > "$tmp/predict.out" || fail "predict"
grep -q "using .*checkpoint_best.safetensors: the best validation Dice" "$tmp/predict.out" || fail "predict did not say which checkpoint: $(cat "$tmp/predict.out")"
"$unet" train --data "$tmp/pre" -o "$tmp/runA" --val-every 0 >/dev/null 2>&1 && fail "train accepted --val-every 0"
grep -q '"shape":\[240,240,155\]' <<<"$("$unet" info --json "$tmp/pred/BRATS_002.nii.gz")" || fail "prediction shape"
grep -q '"shape":\[240,240,155,4\]' <<<"$("$unet" info --json "$tmp/pred/BRATS_002_probabilities.nii.gz")" || fail "probabilities shape"
[ -f "$tmp/pred/BRATS_002.png" ] || fail "predict --png wrote no picture"
# 1 prediction for 5 ground-truth cases: refused (an inflated score otherwise), unless --allow-missing, which warns.
"$unet" evaluate --gt "$tmp/data/labelsTr" --pred "$tmp/pred" >/dev/null 2>&1 && fail "evaluate scored 1 of 5 cases without --allow-missing"
"$unet" evaluate --gt "$tmp/data/labelsTr" --pred "$tmp/pred" --allow-missing --png "$tmp/pictures" --images "$tmp/data/imagesTr" \
  --report "$tmp/report.html" > "$tmp/ev.out" 2>&1 || fail "evaluate a prediction"
grep -q '<figure id="BRATS_002"><img alt="BRATS_002" src="data:image/png;base64,' "$tmp/report.html" || fail "report without the case's picture"
grep -q "WARNING: 4 ground-truth case(s) have no prediction" "$tmp/ev.out" || fail "evaluate --allow-missing did not warn: $(cat "$tmp/ev.out")"
[ -f "$tmp/pictures/BRATS_002.png" ] || fail "evaluate --png wrote no picture"

# 3D: patches, sliding-window validation and prediction, on the same raw case.
"$unet" preprocess --data "$tmp/data" -o "$tmp/pre3d" --dim 3 >/dev/null 2>&1 || fail "preprocess --dim 3"
"$unet" train --data "$tmp/pre3d" --preset nvidia-3d --filters 4,8,8,8 --patch 32,32,32 --epochs 1 -o "$tmp/run3d" >/dev/null 2>&1 \
  || fail "train nvidia-3d"
grep -q '"validationDice"' "$tmp/run3d/log.jsonl" || fail "3D run not validated"
"$unet" predict --model "$tmp/run3d" -i "$tmp/one" -o "$tmp/pred3d" >/dev/null || fail "predict 3D"
grep -q '"shape":\[240,240,155\]' <<<"$("$unet" info --json "$tmp/pred3d/BRATS_002.nii.gz")" || fail "3D prediction shape"

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
  # predict (which makes results, unlike forward) runs fp32 where bf16 dot products are no faster than fp32
  # FMAs, and says so; elsewhere it runs bf16. Either way its summary names what ran.
  "$unet" predict --precision bf16 --model "$tmp/runA" -i "$tmp/one" -o "$tmp/pred-bf16" > "$tmp/bf16.out" 2>&1 \
    || fail "predict --precision bf16: $(cat "$tmp/bf16.out")"
  if grep -q "note: --precision bf16 runs in fp32 on this CPU" "$tmp/bf16.out"; then ran=fp32; else ran=bf16; fi
  grep -q "thread(s), $ran" "$tmp/bf16.out" || fail "predict --precision bf16 ran other than it said ($ran): $(cat "$tmp/bf16.out")"
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
# A predict that fails on a case (an unreadable file) after creating its output folder removes it again.
mkdir -p "$tmp/badcases" && cp "$tmp/bad.nii" "$tmp/badcases/"
set +e
out=$("$unet" predict --model "$tmp/runA" -i "$tmp/badcases" -o "$tmp/pred-bad" 2>&1); status=$?
set -e
[ $status -eq 1 ] && echo "$out" | grep -q "bad.nii" && [ ! -e "$tmp/pred-bad" ] || fail "failed predict: $status, folder left: $(ls -d "$tmp/pred-bad" 2>/dev/null) $out"
# A case too large for the memory there is: refused before it is read, with the need and what is available.
set +e
out=$(UNET_MEMORY_AVAILABLE=512M "$unet" predict --model "$tmp/runA" -i "$tmp/data/imagesTr/BRATS_001.nii.gz" -o "$tmp/pred-mem" 2>&1); status=$?
out2=$(UNET_MEMORY_AVAILABLE=512M "$unet" preprocess --data "$tmp/data" -o "$tmp/pre-mem" --dim 2 2>&1); status2=$?
set -e
[ $status -eq 1 ] && grep -q "predicting case BRATS_001 (240x240x155x4) needs about" <<<"$out" && grep -q "0.5 GB are available" <<<"$out" \
  && [ ! -e "$tmp/pred-mem" ] || fail "predict beyond the memory: $status $out"
[ $status2 -eq 1 ] && grep -q "preprocessing case BRATS_00. needs about" <<<"$out2" && [ ! -e "$tmp/pre-mem" ] || fail "preprocess beyond the memory: $status2 $out2"
# The kernel benchmark's report: JSON with the passes asked for (no layers: the FMA probe only); bad passes refused.
kb=$("$unet" bench kernels --limit 0 --passes 2 --json 2>/dev/null) || fail "bench kernels --limit 0: $kb"
echo "$kb" | grep -q '"passes":2' && echo "$kb" | grep -q '"kernels":\[\]' || fail "bench kernels JSON: $kb"
"$unet" bench kernels --passes 0 >/dev/null 2>&1 && fail "bench kernels accepted --passes 0"
# One vocabulary: every command that writes says -o/--output in its help, takes -o, and refuses an existing
# output without --overwrite (train: without --resume, checked above); --out, the old spelling, still works.
for c in demo synth preprocess evaluate train plot predict overlay init forward step convert; do
  help=$("$unet" $c --help 2>&1)  # whole, not piped into grep -q: an early exit would SIGPIPE the writer
  grep -q -- "-o, --output" <<<"$help" || fail "$c --help does not offer -o, --output"
done
"$unet" init --preset composer-2d -o "$tmp/m.safetensors" >/dev/null 2>&1 && fail "init replaced an existing output"
"$unet" init --preset composer-2d --out "$tmp/old.safetensors" >/dev/null 2>&1 && [ -f "$tmp/old.safetensors" ] || fail "init --out (old spelling)"
"$unet" init --preset composer-2d -o "$tmp/old.safetensors" --overwrite >/dev/null 2>&1 || fail "init --overwrite"
"$unet" forward --model "$tmp/m.safetensors" --input "$tmp/x.npy" -o "$tmp/logits.npy" >/dev/null 2>&1 && fail "forward replaced an existing output"
"$unet" step --model "$tmp/m.safetensors" --input "$tmp/x.npy" --target "$tmp/y.npy" -o "$tmp/m2.safetensors" --losses "$tmp/l.json" >/dev/null 2>&1 \
  && fail "step replaced an existing output"
"$unet" plot "$tmp/runA" -o "$tmp/replot.png" >/dev/null 2>&1 && fail "plot replaced an existing output"
"$unet" plot "$tmp/runA" -o "$tmp/replot.png" --overwrite >/dev/null 2>&1 || fail "plot --overwrite"
"$unet" overlay --image "$tmp/data/imagesTr/BRATS_002.nii.gz" -o "$tmp/replot.png" >/dev/null 2>&1 && fail "overlay replaced an existing output"
"$unet" predict --model "$tmp/runA" -i "$tmp/one" -o "$tmp/pred" >/dev/null 2>&1 && fail "predict replaced an existing output"
"$unet" convert "$tmp/label.npy" -o "$tmp/label.nii.gz" --overwrite >/dev/null 2>&1 || fail "convert --overwrite"
# A failure while running (not a usage error): exit 1, the message, no usage text.
mkdir -p "$tmp/empty-run"
set +e
out=$("$unet" predict --model "$tmp/empty-run" -i "$tmp/one" -o "$tmp/pred-none" 2>&1); status=$?
set -e
[ $status -eq 1 ] && echo "$out" | grep -q "empty-run" && ! echo "$out" | grep -qi "usage" || fail "runtime error: $status $out"
[ ! -e "$tmp/pred-none" ] || fail "a failed predict left its output folder"
"$unet" overlay --image "$tmp/data/imagesTr/BRATS_002.nii.gz" --truth "$tmp/data/labelsTr/BRATS_002.nii.gz" -o "$tmp/overlay.png" >/dev/null \
  && [ -f "$tmp/overlay.png" ] || fail "overlay -o"
set +e
out=$("$unet" synth --cases 1 -o "$tmp/data" 2>&1); status=$?
set -e
[ $status -eq 1 ] && echo "$out" | grep -q -- "--overwrite" && ! echo "$out" | grep -qi "usage" || fail "synth into a dataset: $status $out"
# Installed: the binary and its data under a prefix, copied elsewhere, away from any source tree, still
# finds the brain template (its notice beside it) and reports its version.
scripts/install.sh "$tmp/prefix" >/dev/null || fail "install.sh"
cp -r "$tmp/prefix" "$tmp/moved" && rm -rf "$tmp/prefix"
(cd "$tmp" && ./moved/bin/unet --version | grep -q "commit") || fail "unet --version"
out=$(cd "$tmp" && ./moved/bin/unet synth --cases 2 -o "$tmp/installed-synth" 2>&1) || fail "installed synth: $out"
echo "$out" | grep -q "anatomy: $tmp/moved/share/swiftunet/brain-template/t1_brain.nii.gz" || fail "the installed unet did not find its brain template: $out"
[ -f "$tmp/moved/share/swiftunet/brain-template/SOURCE.md" ] || fail "the template's notice is not installed beside it"
[ -s "$tmp/moved/share/bash-completion/completions/unet" ] || fail "no bash completion installed"
echo "cli-test: all checks passed"
