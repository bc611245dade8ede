#!/usr/bin/env bash
# Kill tests: SIGKILL unet train (20 times, half inside checkpoint writes), synth, preprocess and predict at
# random moments; nothing is left half written and rerunning finishes exactly (see tools/kill_test.py).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 tools/kill_test.py .build/release/unet "$tmp" "$@"
