"""The recipe's 2D training in PyTorch, for the side-by-side comparison with `unet train` (same
preprocessed folder, same fold, same augmentations and probabilities, batch 64, RAdam 1e-3 / wd 1e-4,
constant LR, validation with the recipe's Dice metric), stopped after a budget of training time.

Not a runtime dependency: this is the reference run SwiftUNet is compared against. Written from
REFERENCE.md with our own model (tools/torch_unet.py).

    python3 tools/torch_train.py --data PRE2D --fold 0 --out RUN --minutes 40 --val-every 25

RUN gets log.jsonl in the format of `unet train` (draw it with `unet plot RUN`), final.safetensors
(the PyTorch state_dict, loadable by `unet predict --model`), and config.json.
"""
import argparse
import concurrent.futures
import json
import math
import os
import signal
import sys
import time

import numpy as np
import scipy.ndimage as ndi
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_unet  # noqa: E402

P = 0.15  # probability of each intensity augmentation


class Case:
    def __init__(self, folder, case_id):
        self.id = case_id
        self.x = np.load(f"{folder}/{case_id}_x.npy", mmap_mode="r")  # (C, D, H, W) float32
        self.y = np.load(f"{folder}/{case_id}_y.npy", mmap_mode="r")  # (1, D, H, W) uint8
        labels = np.asarray(self.y[0])
        # Per present class 1..3: the slice index of every voxel of its largest 6-connected component.
        self.foreground = []
        for c in (1, 2, 3):
            mask = labels == c
            if not mask.any():
                continue
            comp, n = ndi.label(mask)
            sizes = np.bincount(comp.ravel())[1:]
            largest = 1 + int(np.argmax(sizes))
            self.foreground.append(np.nonzero(comp == largest)[0])


def sample(case, rng, flip_axes, fg_prob):
    """One augmented slice: crop -> flips -> noise -> blur -> brightness -> contrast."""
    if case.foreground and rng.random() < fg_prob:
        voxels = case.foreground[rng.integers(len(case.foreground))]
        z = int(voxels[rng.integers(len(voxels))])
    else:
        z = int(rng.integers(case.x.shape[1]))
    img = np.array(case.x[:, z], dtype=np.float32)  # (C, H, W)
    lab = np.array(case.y[0, z], dtype=np.uint8)  # (H, W)
    for axis in flip_axes:
        if rng.random() < 0.5:
            img = np.flip(img, axis=1 + axis)
            lab = np.flip(lab, axis=axis)
    img = np.ascontiguousarray(img)
    lab = np.ascontiguousarray(lab)
    if rng.random() < P:
        img += rng.normal(0, rng.uniform(0, 0.33), img.shape).astype(np.float32)
    if rng.random() < P:
        sigma = rng.uniform(0.5, 1.5)
        side = math.exp(-1 / (2 * sigma * sigma))
        k = np.array([side, 1, side], dtype=np.float32) / (1 + 2 * side)
        img = ndi.convolve1d(img, k, axis=2, mode="mirror")
        img = ndi.convolve1d(img, k, axis=1, mode="mirror")
    if rng.random() < P:
        img *= np.float32(rng.uniform(0.7, 1.3))
    if rng.random() < P:
        lo, hi = img.min(), img.max()
        img = np.clip(img * np.float32(rng.uniform(0.65, 1.5)), lo, hi)
    return img, lab


def epoch_plan(n, batch, epoch, seed):
    """One sample per training volume per epoch, shuffled; `batch` per step; the remainder dropped."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    steps = max(1, n // batch)
    return [[int(order[(s * batch + k) % n]) for k in range(batch)] for s in range(steps)]


def make_batch(cases, items, seed, epoch, step, flip_axes, fg_prob):
    rng = np.random.default_rng([seed, epoch, step, 1])
    xs, ys = zip(*(sample(cases[i], rng, flip_axes, fg_prob) for i in items))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)[:, None].astype(np.int64))


@torch.no_grad()
def validate(model, cases, batch, channels_last):
    """The recipe's metric on whole preprocessed volumes (per class with the absent-class rule; mean over
    volumes then classes, x100) and Dice per region WT (1,2,3), TC (2,3), ET (3)."""
    model.eval()
    classes = np.zeros(3)
    regions = {"WT": 0.0, "TC": 0.0, "ET": 0.0}
    region_classes = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    for case in cases:
        x = np.asarray(case.x)
        truth = np.asarray(case.y[0])
        pred = np.empty_like(truth)
        for start in range(0, x.shape[1], batch):
            t = torch.from_numpy(np.ascontiguousarray(x[:, start:start + batch].transpose(1, 0, 2, 3)))
            if channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            pred[start:start + batch] = model(t)[0].argmax(1).numpy().astype(np.uint8)
        for c in (1, 2, 3):
            g, p = truth == c, pred == c
            if g.any():
                classes[c - 1] += 2 * (g & p).sum() / (g.sum() + p.sum())
            else:
                classes[c - 1] += 0.0 if p.any() else 1.0
        for name, cs in region_classes.items():
            g, p = np.isin(truth, cs), np.isin(pred, cs)
            denominator = g.sum() + p.sum()
            regions[name] += 1.0 if denominator == 0 else 2 * (g & p).sum() / denominator
    model.train()
    n = max(len(cases), 1)
    class_dice = [100 * v / n for v in classes]
    return sum(class_dice) / 3, class_dice, {k: 100 * v / n for k, v in regions.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="preprocessed folder (unet preprocess --dim 2)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=40,
                    help="budget of training time (validation excluded), checked at the end of each epoch")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and at the end); 0: never")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--init", help="start from these weights (e.g. `unet init --preset composer-2d --seed 0`, the "
                                   "initial state of `unet train --seed 0`), so both runs start from the same network")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(f"{args.out}/config.json", "w") as f:
        json.dump(vars(args), f, indent=2, sort_keys=True)
    fold = json.load(open(f"{args.data}/splits.json"))["folds"][args.fold]
    train = [Case(args.data, i) for i in fold["train"]]
    val = [Case(args.data, i) for i in fold["val"]]
    model = torch_unet.preset("composer-2d")
    if args.init:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(args.init), strict=True)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch_unet.RAdam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    flip_axes, fg_prob = [0], 0.33  # Composer's set

    # SIGINT (Ctrl-C, or `timeout -s INT 40m` for a wall-clock budget) stops after the current step, as
    # `unet train` does, and the final weights are written.
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    log = open(f"{args.out}/log.jsonl", "w")
    pool = concurrent.futures.ThreadPoolExecutor(1)  # prepares the next batch while this one computes
    budget, trained, step = args.minutes * 60, 0.0, 0
    epoch = 0
    while epoch < args.epochs and trained < budget and not stop:
        plan = epoch_plan(len(train), args.batch, epoch, args.seed)
        start, losses = time.time(), []
        future = pool.submit(make_batch, train, plan[0], args.seed, epoch, 0, flip_axes, fg_prob)
        for s in range(len(plan)):
            x, y = future.result()
            if s + 1 < len(plan):
                future = pool.submit(make_batch, train, plan[s + 1], args.seed, epoch, s + 1, flip_axes, fg_prob)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            t0 = time.time()
            for p in model.parameters():
                p.grad = None
            loss = torch_unet.dice_ce_loss(model(x)[0], y)
            loss.backward()
            opt.step()
            trained += time.time() - t0
            losses.append(loss.item())
            step += 1
            if not math.isfinite(losses[-1]):
                sys.exit(f"loss became {losses[-1]} at step {step}")
            if stop:
                break
        epoch += 1
        record = {"epoch": epoch, "step": step, "loss": float(np.mean(losses)), "learningRate": args.lr,
                  "seconds": time.time() - start, "trainingSeconds": trained}
        if args.val_every > 0 and (epoch % args.val_every == 0 or epoch == args.epochs or trained >= budget or stop):
            t0 = time.time()
            dice, classes, regions = validate(model, val, 32, args.channels_last)
            record.update(validationDice=dice, classDice=classes, regionDice=regions, validationSeconds=time.time() - t0)
        log.write(json.dumps(record, sort_keys=True) + "\n")
        log.flush()
        print(f"epoch {epoch} step {step} loss {record['loss']:.4f} trained {trained / 60:.1f} min"
              + (f" val Dice {record['validationDice']:.2f}" if "validationDice" in record else ""), flush=True)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{args.out}/final.safetensors.tmp")
    os.replace(f"{args.out}/final.safetensors.tmp", f"{args.out}/final.safetensors")
    print(f"done: {step} steps of {args.batch} in {trained / 60:.1f} min of training; {args.out}/final.safetensors")


if __name__ == "__main__":
    main()
