"""Weight-gradient accuracy of SwiftUNet training steps against float64 PyTorch (and PyTorch's own float32).

Usage:
  for t in 2 4; do CDNNL_WINOGRAD_3D_TILE=$t unet step --model CKPT --input x.npy --target y.npy \
      --optimizer sgd --lr 100 --weight-decay 0 --momentum 0 -o w_t$t.safetensors --losses l.json --overwrite; done
  python3 tools/grad_accuracy.py --preset nvidia-3d CKPT x.npy y.npy w_t2.safetensors w_t4.safetensors

Each step file holds w - 100 g, so g = (w - w') / 100. Prints, per convolution weight, the relative error
|g - g64| / |g64| of each file's gradient, then median and largest, and the same for PyTorch in float32.
PyTorch is for this check only (never a dependency of SwiftUNet).
"""
import argparse, json, os, struct, sys
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_unet as tu


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header, out = json.loads(b[8:8 + n]), {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        dtype = {"F32": np.float32, "F64": np.float64, "I64": np.int64}[v["dtype"]]
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dtype).reshape(v["shape"])
    return out


def gradients(model, weights, x, y, dtype):
    model = model.to(dtype)
    model.load_state_dict({k: torch.from_numpy(np.array(weights[k])).to(dtype) for k in model.state_dict()})
    model.train()
    tu.dice_ce_loss(model(x.to(dtype))[0], y).backward()
    return {k: p.grad.double().numpy() for k, p in model.named_parameters()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="nvidia-3d")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("checkpoint"), ap.add_argument("x"), ap.add_argument("y")
    ap.add_argument("steps", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    w0 = load(a.checkpoint)
    x = torch.from_numpy(np.load(a.x))
    y = torch.from_numpy(np.load(a.y).astype(np.int64))
    g64 = gradients(tu.preset(a.preset), w0, x, y, torch.float64)
    g32 = gradients(tu.preset(a.preset), w0, x, y, torch.float32)
    names = [k for k in g64 if k.endswith("conv.weight") or k.endswith("transp_conv.weight")]
    columns = {os.path.basename(s): {k: (w0[k].astype(np.float64) - w1[k].astype(np.float64)) / 100
                                     for k in names for w1 in [load(s)]} for s in a.steps}
    columns["torch float32"] = g32
    print(f'{"tensor":50s} ' + " ".join(f"{c:>22s}" for c in columns))
    errors = {c: [] for c in columns}
    for k in names:
        ref = np.linalg.norm(g64[k])
        row = []
        for c, g in columns.items():
            e = np.linalg.norm(g[k] - g64[k]) / ref
            errors[c].append(e)
            row.append(f"{e:22.2e}")
        print(f"{k:50s} " + " ".join(row))
    for c, e in errors.items():
        print(f"{c}: median {np.median(e):.2e}, largest {np.max(e):.2e}")


if __name__ == "__main__":
    main()
