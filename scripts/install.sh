#!/usr/bin/env bash
# Installs `unet` and the files it ships with under PREFIX (default /usr/local):
#   PREFIX/bin/unet
#   PREFIX/share/swiftunet/brain-template/   the BraTS-grid brain template and its notice (SOURCE.md)
#   PREFIX/share/swiftunet/bench/, tools/     the PyTorch reference `unet bench train` compares against
#   PREFIX/share/swiftunet/COMMIT             the commit `unet --version` reports
#   PREFIX/share/bash-completion/completions/unet
# The binary finds them relative to itself, so a copied PREFIX keeps working. Builds first when needed
# (scripts/setup.sh installs the build's packages).
#
#   scripts/install.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
[ -x .build/release/unet ] || swift build -c release
share="$prefix/share/swiftunet"
mkdir -p "$prefix/bin" "$share/brain-template" "$share/bench" "$share/tools" "$prefix/share/bash-completion/completions"
install -m 755 .build/release/unet "$prefix/bin/unet.tmp" && mv -f "$prefix/bin/unet.tmp" "$prefix/bin/unet"
install -m 644 data/brain-template/t1_brain.nii.gz data/brain-template/SOURCE.md "$share/brain-template/"
install -m 644 bench/torch_reference.py "$share/bench/"
install -m 644 tools/torch_unet.py "$share/tools/"
git rev-parse HEAD > "$share/COMMIT" 2>/dev/null || echo unknown > "$share/COMMIT"
"$prefix/bin/unet" --generate-completion-script bash > "$prefix/share/bash-completion/completions/unet"
echo "installed $("$prefix/bin/unet" --version) to $prefix/bin/unet (data in $share)"
case ":$PATH:" in *":$prefix/bin:"*) ;; *) echo "note: $prefix/bin is not on your PATH" ;; esac
