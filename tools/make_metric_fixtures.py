#!/usr/bin/env python3
"""Writes label-map pairs and their Dice / HD95 computed independently with scipy
(Tests/SegmentationTests/Fixtures/metrics): gt/CASE.nii.gz, pred/CASE.nii.gz, expected.json.
HD95 as medpy's hd95: surfaces = mask XOR its erosion (6-connectivity, outside the image counts as
background), distances by scipy's exact EDT with the voxel spacing, 95th percentile (linear) of the union
of both directions. Run: pip install nibabel scipy numpy && python3 tools/make_metric_fixtures.py
"""
import json
import os
import numpy as np
import nibabel as nib
from scipy import ndimage

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "SegmentationTests", "Fixtures", "metrics")
STRUCTURES = {"1": [1], "2": [2], "3": [3], "WT": [1, 2, 3], "TC": [2, 3], "ET": [3]}


def surface(m):
    return m ^ ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(m.ndim, 1), iterations=1)


def hd95(a, b, spacing):
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(a.shape, spacing))))
    sa, sb = surface(a), surface(b)
    da = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    db = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return float(np.percentile(np.hstack((da, db)), 95))


def dice(a, b):
    tp, fp, fn = (a & b).sum(), (a & ~b).sum(), (~a & b).sum()
    return 1.0 if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))


def blob(shape, centre, radii, rng):
    idx = np.indices(shape).astype(float)
    r = sum(((idx[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return r + rng.normal(0, 0.15, shape) < 1


def main():
    rng = np.random.default_rng(5)
    shape = (24, 20, 12)
    cases = {
        "CASE_A": ((1.0, 1.0, 1.0), True, True),
        "CASE_B": ((1.0, 1.5, 2.5), True, True),
        "CASE_C": ((0.8, 0.8, 3.0), False, True),   # no enhancing tumour in the truth, some predicted
        "CASE_D": ((1.0, 1.0, 1.0), False, False),  # no enhancing tumour anywhere
    }
    expected = {}
    for name, (spacing, et_truth, et_pred) in cases.items():
        gt = np.zeros(shape, np.uint8)
        gt[blob(shape, (12, 10, 6), (8, 7, 4), rng)] = 1
        gt[blob(shape, (12, 10, 6), (5, 4, 3), rng)] = 2
        if et_truth:
            gt[blob(shape, (13, 10, 6), (3, 3, 2), rng)] = 3
        pred = np.zeros(shape, np.uint8)
        pred[blob(shape, (11, 11, 6), (8, 6, 4), rng)] = 1
        pred[blob(shape, (12, 11, 6), (4, 4, 3), rng)] = 2
        if et_pred:
            pred[blob(shape, (12, 9, 5), (3, 2, 2), rng)] = 3
        aff = np.diag(list(spacing) + [1.0])
        nib.save(nib.Nifti1Image(gt, aff), os.path.join(OUT, "gt", name + ".nii.gz"))
        nib.save(nib.Nifti1Image(pred, aff), os.path.join(OUT, "pred", name + ".nii.gz"))
        scores = {"dice": {}, "hd95": {}}
        for s, classes in STRUCTURES.items():
            a, b = np.isin(pred, classes), np.isin(gt, classes)
            scores["dice"][s] = dice(a, b)
            scores["hd95"][s] = hd95(a, b, spacing)
        recipe = [scores["dice"][str(c)] if (gt == c).any() else (0.0 if (pred == c).any() else 1.0) for c in (1, 2, 3)]
        scores["recipe"] = 100 * sum(recipe) / 3
        expected[name] = scores
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    print(json.dumps({k: (round(v["recipe"], 3), round(v["hd95"]["WT"], 3)) for k, v in expected.items()}))


if __name__ == "__main__":
    main()
