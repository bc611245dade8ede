#!/usr/bin/env python3
"""PyTorch side of `unet bench train`: times the same step as SwiftUNet, in its own process, and prints one
JSON object (same keys as SwiftUNet's result). The model, loss and RAdam are tools/torch_unet.py's.

  python3 bench/torch_reference.py --preset composer-2d --phase train --batch 16 [--channels-last] [--bf16] [--steps 3]

--bf16: the forward and loss under torch.autocast("cpu", dtype=torch.bfloat16) (PyTorch's mixed precision:
bf16 convolutions, fp32 master weights and optimizer), backward outside it as PyTorch recommends.

Needs: pip install "torch==2.13.0+cpu". Threads: --threads (default 2).
"""
import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from torch_unet import preset, dice_ce_loss, RAdam  # noqa: E402


def conv_flops(model, x):
    """2 x multiply-adds of every convolution in one forward (hooks on the conv modules)."""
    total = [0]

    def hook(m, inp, out):
        k = 1
        for s in m.kernel_size:
            k *= s
        positions = inp[0][0, 0].numel() if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)) else out[0, 0].numel()
        total[0] += 2 * m.in_channels * m.out_channels * k * positions * x.shape[0]

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", required=True)
    ap.add_argument("--phase", choices=["train", "infer"], required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--spatial", type=int, nargs="+", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = preset(a.preset)
    dim = len(a.spatial)
    fmt = (torch.channels_last if dim == 2 else torch.channels_last_3d) if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn([a.batch, 4] + a.spatial).contiguous(memory_format=fmt)
    y = torch.randint(0, 4, [a.batch, 1] + a.spatial)
    flops = conv_flops(model.eval(), x[:1]) * a.batch
    training = a.phase == "train"
    model.train(training)
    opt = RAdam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    times = []
    for step in range(a.steps + 1):
        start = time.perf_counter()
        if training:
            for p in model.parameters():
                p.grad = None
            with autocast():
                loss = dice_ce_loss(model(x)[0], y)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad(), autocast():
                model(x)
        if step > 0:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "implementation": "PyTorch " + torch.__version__ + (" bf16" if a.bf16 else "") + (" channels-last" if a.channels_last else " default"),
        "phase": a.phase, "preset": a.preset, "batch": a.batch, "spatial": a.spatial, "seconds": median,
        "imagesPerSecond": a.batch / median, "gflops": flops * (3 if training else 1) / median / 1e9,
        "peakRSSMB": peak / 1e6, "steps": a.steps,
    }))


if __name__ == "__main__":
    main()
