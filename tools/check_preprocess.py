#!/usr/bin/env python3
"""Checks `unet preprocess` output against an independent NumPy implementation of the recipe
(NVIDIA nnUNet preprocess.py for task 01: crop to the box where any channel > 0, z-score each channel over
its nonzero voxels, 2D: symmetric pad then centre crop of H, W to 192 x 160; 3D: symmetric pad to >= 128^3).

Usage: python3 tools/check_preprocess.py DATASET_DIR PREPROCESSED_DIR [--dim 2|3]   (needs nibabel, numpy)
"""
import argparse
import json
import os
import sys
import numpy as np
import nibabel as nib


def reference(image_path, label_path, dim):
    img = np.asarray(nib.load(image_path).dataobj, dtype=np.float32)      # X, Y, Z, C
    lab = np.asarray(nib.load(label_path).dataobj).astype(np.uint8)       # X, Y, Z
    img = np.transpose(img, (3, 2, 1, 0))                                 # C, Z, Y, X
    lab = np.transpose(lab, (2, 1, 0))[None]
    fg = np.any(img > 0, axis=0)
    idx = np.argwhere(fg)
    lo, hi = idx.min(0), idx.max(0) + 1
    img = img[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    lab = lab[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    out = np.zeros_like(img)
    for c in range(img.shape[0]):
        mask = img[c] != 0
        v = img[c][mask].astype(np.float64)
        std = v.std() or 1.0
        out[c][mask] = ((img[c][mask] - v.mean()) / std).astype(np.float32)
    targets = [None, 192, 160] if dim == 2 else [128, 128, 128]
    for axis, t in enumerate(targets):
        if t is None:
            continue
        size = out.shape[axis + 1]
        if size < t:
            before = (t - size) // 2
            pad = [(0, 0)] * 4
            pad[axis + 1] = (before, t - size - before)
            out, lab = np.pad(out, pad), np.pad(lab, pad)
            size = t
        if dim == 2 and size > t:
            start = size // 2 - t // 2
            sl = [slice(None)] * 4
            sl[axis + 1] = slice(start, start + t)
            out, lab = out[tuple(sl)], lab[tuple(sl)]
    return out, lab


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("preprocessed")
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--cases", type=int, default=3)
    a = ap.parse_args()
    meta = json.load(open(os.path.join(a.dataset, "dataset.json")))
    worst = 0.0
    for entry in meta["training"][: a.cases]:
        case = os.path.basename(entry["image"]).replace(".nii.gz", "")
        x_ref, y_ref = reference(os.path.join(a.dataset, entry["image"]), os.path.join(a.dataset, entry["label"]), a.dim)
        x = np.load(os.path.join(a.preprocessed, case + "_x.npy"))
        y = np.load(os.path.join(a.preprocessed, case + "_y.npy"))
        assert x.shape == x_ref.shape, (case, x.shape, x_ref.shape)
        assert np.array_equal(y, y_ref), case
        err = float(np.abs(x - x_ref).max())
        worst = max(worst, err)
        print(f"{case}: shape {x.shape}, labels equal, max |x - numpy| = {err:.2e}")
    if worst > 1e-4:
        sys.exit(f"FAIL: max difference {worst}")
    print("OK")


if __name__ == "__main__":
    main()
