#!/usr/bin/env python3
"""PyTorch's side of `unet predict`, for timing the whole job against it in the same run: read a 4D NIfTI
case, preprocess as SwiftUNet does (crop to the nonzero box, z-score each channel over its nonzero voxels;
composer-2d: pad H and W to at least 192x160 and to a multiple of 32, forward the slices in batches;
nvidia-3d: pad every axis to at least the patch, 128^3 windows overlapping by --overlap with starts spread
evenly, each window's logits weighted by a Gaussian of sigma patch/8), eval mode, no autograd,
channels-last, argmax, put the labels back on the original grid and write them.

    torch_predict.py WEIGHTS.safetensors IN.nii.gz OUT.nii.gz [--preset composer-2d|nvidia-3d]
                     [--slice-batch 16] [--overlap 0.5] [--threads 2] [--bf16]

Prints the seconds of each phase (read, preprocess, forward, write) as JSON. Needs torch, safetensors, nibabel.
"""
import argparse, json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nibabel as nib
import numpy as np
import torch
from safetensors.torch import load_file
from torch_unet import preset

ap = argparse.ArgumentParser()
ap.add_argument("weights"); ap.add_argument("input"); ap.add_argument("output")
ap.add_argument("--preset", default="composer-2d", choices=["composer-2d", "nvidia-3d"])
ap.add_argument("--slice-batch", type=int, default=16)
ap.add_argument("--overlap", type=float, default=0.5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--bf16", action="store_true")
a = ap.parse_args()
torch.set_num_threads(a.threads)
t = {}
start = time.time()

three = a.preset == "nvidia-3d"
model = preset(a.preset)
state = {k: v for k, v in load_file(a.weights).items() if not k.startswith("optimizer/")}
model.load_state_dict(state, strict=False)
model.eval().to(memory_format=torch.channels_last_3d if three else torch.channels_last)
t["load model"] = time.time() - start

s = time.time()
img = nib.load(a.input)
data = np.asarray(img.dataobj, dtype=np.float32)  # X, Y, Z, C
t["read"] = time.time() - s

s = time.time()
X, Y, Z, C = data.shape
nonzero = (data != 0).any(axis=3)
idx = [np.where(nonzero.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
box = [(int(i.min()), int(i.max()) + 1) for i in idx]
crop = data[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]]
vol = np.ascontiguousarray(crop.transpose(3, 2, 1, 0))  # C, D(z), H(y), W(x)
mask = (vol != 0)
for c in range(C):
    v = vol[c][mask[c]]
    if v.size:
        m, sd = float(v.mean()), float(v.std()) or 1.0
        vol[c][mask[c]] = (v - m) / sd
D, H, W = vol.shape[1:]
if three:
    P = 128
    size = [max(n, P) for n in (D, H, W)]
    pads = [((m - n) // 2, m - n - (m - n) // 2) for n, m in zip((D, H, W), size)]
    padded = np.pad(vol, [(0, 0)] + pads)
else:
    TH, TW = max(H, 192), max(W, 160)
    TH, TW = (TH + 31) // 32 * 32, (TW + 31) // 32 * 32
    ph, pw = (TH - H) // 2, (TW - W) // 2
    padded = np.zeros((C, D, TH, TW), np.float32)
    padded[:, :, ph:ph + H, pw:pw + W] = vol
t["preprocess"] = time.time() - s

def starts(n, p, overlap):
    if n <= p:
        return [0]
    step = max(1.0, p * (1 - overlap))
    count = int(np.ceil((n - p) / step)) + 1
    return [int(round((n - p) * i / (count - 1))) for i in range(count)]

s = time.time()
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
    if three:
        sd = P / 8
        g1 = np.exp(-((np.arange(P) - (P - 1) / 2) ** 2) / (2 * sd * sd))
        gauss = (g1[:, None, None] * g1[None, :, None] * g1[None, None, :]).astype(np.float32)
        gauss = np.maximum(gauss, gauss[gauss > 0].min())
        K = 4
        total = np.zeros((K,) + tuple(size), np.float32)
        weight = np.zeros(tuple(size), np.float32)
        x = torch.from_numpy(padded)
        for z in starts(size[0], P, a.overlap):
            for y in starts(size[1], P, a.overlap):
                for w in starts(size[2], P, a.overlap):
                    win = x[None, :, z:z + P, y:y + P, w:w + P].contiguous(memory_format=torch.channels_last_3d)
                    out = model(win)[0][0].float().numpy()
                    total[:, z:z + P, y:y + P, w:w + P] += out * gauss
                    weight[z:z + P, y:y + P, w:w + P] += gauss
        labels3 = (total / weight).argmax(0).astype(np.uint8)
        (bz, by, bx) = pads
        labels = labels3[bz[0]:bz[0] + D, by[0]:by[0] + H, bx[0]:bx[0] + W]
    else:
        labels = np.zeros((D, TH, TW), np.uint8)
        x = torch.from_numpy(padded.transpose(1, 0, 2, 3).copy())  # D, C, H, W
        for b in range(0, D, a.slice_batch):
            out = model(x[b:b + a.slice_batch].contiguous(memory_format=torch.channels_last))[0]
            labels[b:b + a.slice_batch] = out.float().argmax(1).numpy().astype(np.uint8)
        labels = labels[:, ph:ph + H, pw:pw + W]
t["forward"] = time.time() - s

s = time.time()
full = np.zeros((X, Y, Z), np.uint8)
full[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]] = labels.transpose(2, 1, 0)
out = nib.Nifti1Image(full, img.affine, img.header)
out.set_data_dtype(np.uint8)
nib.save(out, a.output)
t["write"] = time.time() - s
t["total"] = time.time() - start
print(json.dumps({k: round(v, 3) for k, v in t.items()}))
