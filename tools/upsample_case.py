#!/usr/bin/env python3
"""Makes a finer-grid copy of a case, for checking that prediction covers the whole brain at other spacings.

    upsample_case.py IMAGE.nii.gz LABEL.nii.gz OUT_IMAGE.nii.gz OUT_LABEL.nii.gz [--factor 2]

The image (X, Y, Z, C) and its label are resampled in-plane (x, y) by FACTOR: linear for the image, nearest for
the label and the brain mask (zero outside it, as the original), voxel centres aligned, the affine scaled to match (e.g. 1 mm 240x240x155 becomes 0.5 mm 480x480x155).
Needs numpy, scipy and nibabel.
"""
import argparse
import nibabel as nib
import numpy as np
from scipy import ndimage

ap = argparse.ArgumentParser()
ap.add_argument("image"); ap.add_argument("label"); ap.add_argument("out_image"); ap.add_argument("out_label")
ap.add_argument("--factor", type=int, default=2)
a = ap.parse_args()
f = a.factor

def finer(affine):
    out = affine.copy()
    for axis in (0, 1):
        out[:3, axis] = affine[:3, axis] / f
        out[:3, 3] += affine[:3, axis] * (0.5 / f - 0.5)  # new voxel 0's centre, in old voxel units
    return out

def coordinates(n):  # source coordinate of each fine voxel centre along an axis
    return np.clip((np.arange(n * f) + 0.5) / f - 0.5, 0, n - 1)

img = nib.load(a.image)
data = np.asarray(img.dataobj, dtype=np.float32)
X, Y, Z = data.shape[:3]
gx, gy, gz = np.meshgrid(coordinates(X), coordinates(Y), np.arange(Z), indexing="ij")
# Skull-stripped as the original: the brain mask (nonzero in any channel) by nearest, zero outside it.
inside = ndimage.map_coordinates((data != 0).any(axis=3).astype(np.uint8), [np.rint(gx), np.rint(gy), gz], order=0)
channels = [ndimage.map_coordinates(data[..., c], [gx, gy, gz], order=1) * inside for c in range(data.shape[3])]
nib.save(nib.Nifti1Image(np.stack(channels, axis=-1).astype(np.float32), finer(img.affine)), a.out_image)
lab = nib.load(a.label)
ldata = np.asarray(lab.dataobj).astype(np.uint8)
fine = ndimage.map_coordinates(ldata, [np.rint(gx), np.rint(gy), gz], order=0)
nib.save(nib.Nifti1Image(fine.astype(np.uint8), finer(lab.affine)), a.out_label)
print(f"{a.out_image}: {X}x{Y}x{Z} -> {X * f}x{Y * f}x{Z}, spacing {img.header.get_zooms()[:3]} -> "
      f"{tuple(float(z) / (f if i < 2 else 1) for i, z in enumerate(img.header.get_zooms()[:3]))}")
