#!/usr/bin/env python3
"""Compares training runs of `unet train` (standard library only, so CI can run it).

    compare_runs.py REF OTHER [BASELINE]

Prints the largest relative difference between REF's and OTHER's per-epoch losses (log.jsonl), and the
largest difference between their final weights (checkpoint_last.safetensors), per tensor relative to the
tensor's largest magnitude in REF. With BASELINE (REF's run repeated another way, e.g. other thread count),
also its weight difference from REF, and the ratio OTHER/BASELINE. Prints one JSON object.
"""
import json, struct, sys
from array import array

def losses(run):
    with open(run + "/log.jsonl") as f:
        return [json.loads(line)["loss"] for line in f if line.endswith("\n")]

def tensors(run):
    with open(run + "/checkpoint_last.safetensors", "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32" or name.startswith("optimizer/"):
            continue
        a = array("f")
        a.frombytes(data[base + t["data_offsets"][0]: base + t["data_offsets"][1]])
        out[name] = a
    return out

def weight_difference(a, b):
    worst, where = 0.0, None
    for name, x in a.items():
        y = b[name]
        scale = max(abs(v) for v in x) or 1.0
        d = max(abs(p - q) for p, q in zip(x, y)) / scale
        if d > worst:
            worst, where = d, name
    return worst, where

ref, other = sys.argv[1], sys.argv[2]
la, lb = losses(ref), losses(other)
if len(la) != len(lb):
    sys.exit(f"{ref} has {len(la)} epochs, {other} has {len(lb)}")
rel = max(abs(p - q) / max(abs(p), 1e-12) for p, q in zip(la, lb))
ta = tensors(ref)
if not ta:
    sys.exit(f"{ref}/checkpoint_last.safetensors holds no float32 model tensors")
d, where = weight_difference(ta, tensors(other))
result = {"epochs": len(la), "lossRelativeMax": rel, "weightDifference": d, "worstTensor": where}
if len(sys.argv) > 3:
    base, _ = weight_difference(ta, tensors(sys.argv[3]))
    result["baselineWeightDifference"] = base
    result["ratio"] = d / base if base > 0 else float("inf")
print(json.dumps(result))
