"""A seeded toy task for pruning, small enough for CPU tests, and the paper's comparison on it.

Task: 16-dim Gaussian inputs labelled (4 classes) by a random teacher MLP; student: a
16-64-64-4 ReLU MLP (5376 prunable weights).  Protocol as in the paper: train a dense
baseline, then, starting from it, (a) fine-tune with self-pinching gates (one pass),
(b) prune by uniform magnitude (UMP) and fine-tune with fixed masks, (c) prune by magnitude to
the per-layer sparsities the gates found (mixed sparsity) and fine-tune with fixed masks.

    python -m icefall.prune.toy            # prints a markdown table

``train`` is also a compact reference of the training-loop side of the API.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.prune.baselines import mixed_sparsity_prune, uniform_magnitude_prune
from icefall.prune.export import export_compact
from icefall.prune.gates import (
    GateController,
    add_gates,
    current_sparsity,
    gate_parameters,
    gate_regularizer,
)

ToyData = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
LAYERS = r"^\d+$"  # the three nn.Linear of toy_model()


def toy_data(seed: int = 123, n_train: int = 5000, n_test: int = 1000) -> ToyData:
    """(x_train (N,16), y_train (N,), x_test (M,16), y_test (M,)), labels in [0, 4)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 16, generator=g)
    w1, w2 = torch.randn(16, 16, generator=g), torch.randn(16, 4, generator=g)
    y = (torch.tanh(x @ w1 / 4) @ w2).argmax(-1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def toy_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(-1) == y).float().mean().item()


def train(
    model: nn.Module,
    data: ToyData,
    steps: int = 400,
    lr: float = 3e-3,
    controller: Optional[GateController] = None,
    threshold_lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> float:
    """Adam, constant lr then linear decay to 0 over the second half; returns test accuracy.

    With ``controller`` the loss gets ``eta * gate_regularizer(model)`` and the thresholds
    their own parameter group: their learning rate bounds how far the sparsity overshoots
    the target after eta switches off (Adam moves each threshold by about lr per step).
    """
    xtr, ytr, xte, yte = data
    thresholds = gate_parameters(model)
    ids = {id(t) for t in thresholds}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr": lr}]
    if thresholds:
        groups.append({"params": thresholds, "lr": threshold_lr})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, 2 * (steps - s) / steps))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(xtr), (batch_size,), generator=g)
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        if controller is not None:
            loss = loss + controller.update(model, step) * gate_regularizer(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return accuracy(model, xte, yte)


def compare(targets: List[float], steps: int = 400, eta: float = 1.0) -> List[Dict]:
    """Rows {method, target, sparsity, accuracy, compact_bytes, dense_bytes} for the dense
    baseline and, per target, gates / UMP / mixed sparsity (each fine-tuned ``steps``)."""
    data = toy_data()
    base = toy_model()
    rows = [{"method": "dense baseline", "target": 0.0, "sparsity": 0.0,
             "accuracy": train(base, data, steps)}]
    tmp = Path(tempfile.mkdtemp())
    for target in targets:
        gated = copy.deepcopy(base)
        add_gates(gated, LAYERS)
        acc = train(gated, data, steps, controller=GateController(target, eta, steps))
        rows.append({"method": "gates (one pass)", "target": target, "model": gated,
                     "accuracy": acc})
        ump = copy.deepcopy(base)
        uniform_magnitude_prune(ump, LAYERS, target)
        rows.append({"method": "UMP + fine-tune", "target": target, "model": ump,
                     "accuracy_before": accuracy(ump, *data[2:]),
                     "accuracy": train(ump, data, steps)})
        mixed = copy.deepcopy(base)
        mixed_sparsity_prune(mixed, current_sparsity(gated)[1])
        rows.append({"method": "mixed sparsity + fine-tune", "target": target, "model": mixed,
                     "accuracy_before": accuracy(mixed, *data[2:]),
                     "accuracy": train(mixed, data, steps)})
    for i, row in enumerate(rows):
        model = row.pop("model", base)
        row["sparsity"] = current_sparsity(model)[0]
        rep = export_compact(model, tmp / f"{i}.pt")
        row["compact_bytes"], row["dense_bytes"] = rep["compact_bytes"], rep["dense_bytes"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eta", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = compare(args.targets, args.steps, args.eta)
    print("| method | target | sparsity (%) | test acc (%) | acc before fine-tune (%) "
          "| compact bytes | dense bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        before = f"{100 * r['accuracy_before']:.1f}" if "accuracy_before" in r else "-"
        print(f"| {r['method']} | {100 * r['target']:.0f} | {100 * r['sparsity']:.2f} "
              f"| {100 * r['accuracy']:.1f} | {before} | {r['compact_bytes']} "
              f"| {r['dense_bytes']} |")


if __name__ == "__main__":
    main()
