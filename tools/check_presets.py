#!/usr/bin/env python3
"""Weights move both ways, checked on the full presets with the real binary:
 1. a PyTorch state_dict of each preset (tools/torch_unet.py), saved with safetensors.torch.save_file, loads in
    `unet forward` with no flags and gives PyTorch's logits (relative error <= 1e-4);
 2. a SwiftUNet file from `unet init` loads into the PyTorch model with load_state_dict(strict=True) and
    gives SwiftUNet's logits.
Run from the repository root after `swift build -c release`:
    pip install "torch==2.13.0+cpu" safetensors && python3 tools/check_presets.py
"""
import os
import subprocess
import sys
import tempfile
import numpy as np
import torch
from safetensors.torch import save_file, load_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_unet import preset, randomize_norms  # noqa: E402

UNET = os.path.join(os.path.dirname(__file__), "..", ".build", "release", "unet")
SHAPES = {"composer-2d": (2, 4, 64, 96), "nvidia-3d": (1, 4, 32, 32, 64)}


def relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def run(*args):
    subprocess.run([UNET, *args], check=True, stdout=subprocess.DEVNULL)


def main():
    torch.manual_seed(0)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES.items():
            model = preset(name)
            randomize_norms(model)
            model.eval()
            x = torch.randn(shape)
            np.save(f"{tmp}/x.npy", x.numpy())
            # 1. PyTorch -> SwiftUNet
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{tmp}/torch.safetensors")
            run("forward", "--model", f"{tmp}/torch.safetensors", "--input", f"{tmp}/x.npy", "--output", f"{tmp}/a.npy")
            with torch.no_grad():
                expected = model(x)[0].numpy()
            e1 = relative(np.load(f"{tmp}/a.npy"), expected)
            # 2. SwiftUNet -> PyTorch
            run("init", "--preset", name, "--seed", "7", "-o", f"{tmp}/swift.safetensors")
            run("forward", "--model", f"{tmp}/swift.safetensors", "--input", f"{tmp}/x.npy", "--output", f"{tmp}/b.npy")
            model.load_state_dict(load_file(f"{tmp}/swift.safetensors"), strict=True)
            with torch.no_grad():
                expected = model(x)[0].numpy()
            e2 = relative(np.load(f"{tmp}/b.npy"), expected)
            params = sum(p.numel() for p in model.parameters())
            print(f"{name} ({params:,} parameters), input {tuple(shape)}: PyTorch -> SwiftUNet logits error {e1:.2e}, "
                  f"SwiftUNet -> PyTorch {e2:.2e}")
            worst = max(worst, e1, e2)
            for f in ("a.npy", "b.npy", "swift.safetensors"):
                os.remove(f"{tmp}/{f}")
    if worst > 1e-4:
        sys.exit(f"FAIL: worst relative error {worst:.2e}")
    print("OK")


if __name__ == "__main__":
    main()
