#!/usr/bin/env python3
"""PyTorch's side of `unet predict` for composer-2d, for timing the whole job against it in the same run:
read a 4D NIfTI case, preprocess as SwiftUNet does (crop to the nonzero box, z-score each channel over its
nonzero voxels, pad H and W to at least 192x160 and to a multiple of 32), forward the slices in batches
(eval mode, no autograd, channels-last), argmax, put the labels back on the original grid and write them.

    torch_predict.py WEIGHTS.safetensors IN.nii.gz OUT.nii.gz [--slice-batch 16] [--threads 2] [--bf16]

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
ap.add_argument("--slice-batch", type=int, default=16)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--bf16", action="store_true")
a = ap.parse_args()
torch.set_num_threads(a.threads)
t = {}
start = time.time()

model = preset("composer-2d")
state = {k: v for k, v in load_file(a.weights).items() if not k.startswith("optimizer/")}
model.load_state_dict(state, strict=False)
model.eval().to(memory_format=torch.channels_last)
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
TH, TW = max(H, 192), max(W, 160)
TH, TW = (TH + 31) // 32 * 32, (TW + 31) // 32 * 32
ph, pw = (TH - H) // 2, (TW - W) // 2
padded = np.zeros((C, D, TH, TW), np.float32)
padded[:, :, ph:ph + H, pw:pw + W] = vol
t["preprocess"] = time.time() - s

s = time.time()
labels = np.zeros((D, TH, TW), np.uint8)
x = torch.from_numpy(padded.transpose(1, 0, 2, 3).copy())  # D, C, H, W
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
    for b in range(0, D, a.slice_batch):
        out = model(x[b:b + a.slice_batch].contiguous(memory_format=torch.channels_last))[0]
        labels[b:b + a.slice_batch] = out.float().argmax(1).numpy().astype(np.uint8)
t["forward"] = time.time() - s

s = time.time()
full = np.zeros((X, Y, Z), np.uint8)
full[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]] = labels[:, ph:ph + H, pw:pw + W].transpose(2, 1, 0)
out = nib.Nifti1Image(full, img.affine, img.header)
out.set_data_dtype(np.uint8)
nib.save(out, a.output)
t["write"] = time.time() - s
t["total"] = time.time() - start
print(json.dumps({k: round(v, 3) for k, v in t.items()}))
