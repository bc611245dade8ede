#!/usr/bin/env python3
"""Writes Tests/SegmentationTests/kfold_sklearn.json: scikit-learn's KFold validation folds for a few
(case count, seed) pairs, which the Swift split must reproduce exactly (Composer uses seed 0, NVIDIA 12345).
Run: pip install scikit-learn && python3 tools/make_split_fixture.py"""
import json
import os
from sklearn.model_selection import KFold

out = {}
for n, seed in [(484, 0), (40, 0), (40, 12345), (7, 3)]:
    ids = [f"BRATS_{i:03d}" for i in range(1, n + 1)]
    out[f"{n}_{seed}"] = [sorted(ids[j] for j in val) for _, val in KFold(5, shuffle=True, random_state=seed).split(ids)]
path = os.path.join(os.path.dirname(__file__), "..", "Tests", "SegmentationTests", "kfold_sklearn.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", os.path.normpath(path))
