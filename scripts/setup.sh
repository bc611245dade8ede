#!/usr/bin/env bash
# Installs the system libraries SwiftUNet needs (only those missing) and builds in release mode.
# Safe to run again: it skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libdnnl-dev zlib1g-dev libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release
echo "built: $(pwd)/.build/release/unet"
