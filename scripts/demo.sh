#!/usr/bin/env bash
# The main job on data it makes itself: `unet demo` synthesizes a phantom dataset, preprocesses it,
# trains the 2D recipe briefly, predicts and evaluates the validation cases and draws overlays (demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
unet=.build/release/unet
[ -x "$unet" ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }
exec "$unet" demo -o demo "$@"
