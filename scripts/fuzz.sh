#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer + AddressSanitizer) of a parser of outside bytes.
#   scripts/fuzz.sh TARGET SECONDS     TARGET: nifti nifti-gz npy safetensors checkpoint dataset, or all
# Builds the unet-fuzz product with -sanitize=fuzzer,address into .build-fuzz, seeds the corpus
# (.build-fuzz/corpus/TARGET, kept between runs) from the committed fixtures, runs for SECONDS, and prints
# executions and coverage. A crash, leak, sanitizer report or an input slower than 10 s stops it with exit
# status 1 and leaves the input in .build-fuzz/findings/TARGET/ (add it to the tests with its fix).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
targets=(nifti nifti-gz npy safetensors checkpoint dataset)
[ $# -eq 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh TARGET|all SECONDS (targets: ${targets[*]})" >&2; exit 64; }
if [ "$1" = all ]; then selected=("${targets[@]}"); else selected=("$1"); fi
for t in "${selected[@]}"; do
  [[ " ${targets[*]} " == *" $t "* ]] || { echo "unknown target $t (targets: ${targets[*]})" >&2; exit 64; }
done

swift build -c debug --build-path .build-fuzz --product unet-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld \
  -Xlinker --undefined=LLVMFuzzerRunDriver -Xlinker --export-dynamic-symbol=LLVMFuzzerRunDriver >/dev/null
binary=.build-fuzz/debug/unet-fuzz

seeds() {  # the committed files a target starts from
  case "$1" in
    nifti) ls Tests/MedicalImagingTests/Fixtures/*.nii ;;
    nifti-gz) ls Tests/MedicalImagingTests/Fixtures/*.nii.gz ;;
    npy) ls Tests/MedicalImagingTests/Fixtures/*.npy Tests/FuzzSeeds/npy/* ;;
    safetensors) ls Tests/NeuralNetTests/Fixtures/optimizers.safetensors Tests/FuzzSeeds/checkpoint/* ;;
    checkpoint) ls Tests/FuzzSeeds/checkpoint/* ;;
    dataset) ls Tests/FuzzSeeds/dataset/*.json ;;
  esac
}

status=0
for t in "${selected[@]}"; do
  corpus=.build-fuzz/corpus/$t findings=.build-fuzz/findings/$t
  mkdir -p "$corpus" "$findings"
  for f in $(seeds "$t"); do cp -n "$f" "$corpus/" 2>/dev/null || true; done
  log=.build-fuzz/$t.log
  set +e
  UNET_FUZZ_TARGET=$t ASAN_OPTIONS=detect_leaks=1 "$binary" "$corpus" -max_total_time="$2" -timeout=10 \
    -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 -artifact_prefix="$findings/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o "stat::number_of_executed_units: *[0-9]*" "$log" | tail -1 | grep -o "[0-9]*$" || echo "?")
  cov=$(grep -E "^#[0-9]+" "$log" | tail -1 | grep -o "cov: [0-9]*" || echo "cov: ?")
  ft=$(grep -E "^#[0-9]+" "$log" | tail -1 | grep -o "ft: [0-9]*" || echo "ft: ?")
  units=$(ls "$corpus" | wc -l)
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: ${2} s, $execs executions, $cov edges, $ft features, corpus $units inputs: no finding"
  else
    echo "fuzz $t: FINDING after $execs executions (exit $rc); input in $findings/, log $log" >&2
    grep -E "ERROR|SUMMARY|Fatal error|panic|deadly signal" "$log" | head -5 >&2
    status=1
  fi
done
exit $status
