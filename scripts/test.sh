#!/usr/bin/env bash
# The project's test command: unit tests (engine kernels against the reference, NIfTI/NumPy files,
# datasets, preprocessing, phantom; bad input), the memory check (1,000 forward+backward iterations
# must keep RSS flat), the command-line checks on the real binary, kill tests (train, synth, preprocess,
# predict killed and rerun), failed writes (file size limit, full disk, read-only, missing parent), training
# under mpirun (2 processes on
# one host, and on two hosts made of network namespaces when run as root), and 30 s of fuzzing per parser.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
swift test
swift build -c release --product unet
.build/release/unet bench memory --iterations 1000
scripts/cli-test.sh
scripts/kill-test.sh
scripts/disk-test.sh
scripts/mpi-test.sh
scripts/netns-test.sh
scripts/fuzz.sh all 30
