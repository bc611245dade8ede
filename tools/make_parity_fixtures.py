#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures (Tests/NeuralNetTests/Fixtures) from tools/torch_unet.py:
for a 2D residual batch-norm UNet (depth 4, 32x32, batch 2) and a 3D plain instance-norm UNet (depth 3,
16^3, batch 1), both with filters 8, 16, 32(, 64) to keep the files small:
  NAME_weights.safetensors  the model's state_dict (as PyTorch users save it)
  NAME_io.safetensors       input, target, logits, loss, every parameter gradient (grad/<name>), and the
                            losses of 5 RAdam steps (lr 1e-3, weight decay 1e-4) from those weights
Run: pip install "torch==2.13.0+cpu" safetensors && python3 tools/make_parity_fixtures.py
"""
import os
import sys
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_unet import UNet, dice_ce_loss, RAdam, randomize_norms  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "NeuralNetTests", "Fixtures")


def make(name, model, shape, seed):
    torch.manual_seed(seed)
    model = model.double()  # fixtures in float64, stored as float32: the reference's own rounding stays out
    randomize_norms(model)
    x = torch.randn(shape).double()  # float32 values, so the stored input is exact
    y = torch.randint(0, 4, (shape[0], 1) + tuple(shape[2:]))
    # Keep every class present in the target.
    y.view(-1)[:4] = torch.arange(4)
    state = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, f"{name}_weights.safetensors"))
    # Compute from exactly the stored (float32) weights.
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})

    model.train()
    logits = model(x)[0]
    loss = dice_ce_loss(logits, y)
    model.zero_grad()
    loss.backward()
    io = {"input": x.float(), "target": y.to(torch.uint8), "logits": logits.detach().float(),
          "loss": loss.detach().float().reshape(1)}
    for n, p in model.named_parameters():
        io["grad/" + n] = p.grad.float().contiguous()

    # Inference mode from the stored weights: batch norm on its (randomized) running statistics.
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    model.eval()
    with torch.no_grad():
        io["eval_logits"] = model(x)[0].float()
    model.train()

    # Five RAdam steps from the saved weights (fresh copy, same batch, training mode).
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    opt = RAdam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    losses = []
    for _ in range(5):
        model.zero_grad()
        l = dice_ce_loss(model(x)[0], y)
        l.backward()
        opt.step()
        losses.append(l.item())
    io["radam_losses"] = torch.tensor(losses, dtype=torch.float64)
    save_file(io, os.path.join(OUT, f"{name}_io.safetensors"))
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters, loss {loss.item():.6f}, RAdam losses {[round(v, 6) for v in losses]}")


def optimizers():
    """PyTorch's own Adam, AdamW and SGD (momentum, Nesterov) and our RAdam on a 50-value parameter
    with three fixed gradients: optimizers.safetensors holds p0, g1..g3 and each result."""
    torch.manual_seed(3)
    p0 = torch.randn(50)
    grads = [torch.randn(50) for _ in range(3)]
    out = {"p0": p0, **{f"g{i + 1}": g for i, g in enumerate(grads)}}
    configs = {
        "adam": lambda p: torch.optim.Adam([p], lr=1e-2, weight_decay=1e-2),
        "adamw": lambda p: torch.optim.AdamW([p], lr=1e-2, weight_decay=1e-2),
        "sgd": lambda p: torch.optim.SGD([p], lr=1e-2, momentum=0.9, weight_decay=1e-2),
        "sgd_nesterov": lambda p: torch.optim.SGD([p], lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-2),
        "radam": lambda p: RAdam([p], lr=1e-2, weight_decay=1e-2),
    }
    for name, make_opt in configs.items():
        p = p0.clone().requires_grad_(True)
        opt = make_opt(p)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        out[name] = p.detach().clone()
    save_file(out, os.path.join(OUT, "optimizers.safetensors"))
    print("optimizers:", ", ".join(configs))


def main():
    os.makedirs(OUT, exist_ok=True)
    optimizers()
    torch.manual_seed(10)  # model initialisation draws from the global generator
    make("unet2d_resid_batch", UNet(2, 4, 4, [8, 16, 32, 64], [3] * 4, [1, 2, 2, 2], True, "batch"), (2, 4, 32, 32), 1)
    torch.manual_seed(20)
    make("unet3d_plain_instance", UNet(3, 4, 4, [8, 16, 32], [3] * 3, [1, 2, 2], False, "instance"), (1, 4, 16, 16, 16), 2)


if __name__ == "__main__":
    main()
