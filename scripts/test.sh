#!/usr/bin/env bash
# The project's test command: unit tests (natively, as an AVX2-only CPU on AVX-512 ones, and as a baseline x86-64; engine kernels against the reference, NIfTI/NumPy files,
# datasets, preprocessing, phantom; bad input), the memory check (1,000 forward+backward iterations
# must keep RSS flat), the command-line checks on the real binary, kill tests (train, synth, preprocess,
# predict killed and rerun), failed writes (file size limit, full disk, read-only, missing parent), training
# under mpirun (2 processes on
# one host, and on two hosts made of network namespaces when run as root), and 30 s of fuzzing per parser.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
swift test
# On an AVX-512 CPU, the unit tests again down the AVX2-only paths (what a Zen 3 runs: the own kernels'
# AVX2 builds on blocked8, oneDNN capped at AVX2, bf16 refused), so both kinds are tested on every run.
if grep -qw avx512f /proc/cpuinfo; then CDNNL_NO_AVX512=1 swift test --skip-build; fi
# And as a baseline x86-64 without AVX2: oneDNN's SSE4.1 kernels and the losses' baseline build.
CDNNL_NO_AVX2=1 swift test --skip-build
swift build -c release --product unet
.build/release/unet bench memory --iterations 1000
scripts/cli-test.sh
scripts/kill-test.sh
scripts/disk-test.sh
scripts/mpi-test.sh
scripts/netns-test.sh
scripts/fuzz.sh all 30
