"""Per-layer sparsity report of a pruned model: a markdown table and a PNG bar plot.

Works on any model with masked layers (self-pinching gates or fixed magnitude masks).  The
plot needs matplotlib, imported only when a PNG is requested.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch.nn as nn

from icefall.prune.gates import current_sparsity, masked_layers

PathLike = Union[str, os.PathLike]


def layer_rows(model: nn.Module) -> List[Tuple[str, int, float]]:
    """(layer name, number of weights, sparsity) per masked layer, in module order."""
    _, per_layer = current_sparsity(model)
    sizes = {n: m.weight.numel() for n, m in masked_layers(model).items()}
    return [(n, sizes[n], s) for n, s in per_layer.items()]


def sparsity_table(model: nn.Module) -> str:
    """Markdown table: layer | weights | kept | sparsity (%), with a total row."""
    overall, _ = current_sparsity(model)
    rows = layer_rows(model)
    lines = ["| layer | weights | kept | sparsity (%) |", "|---|---:|---:|---:|"]
    for name, n, s in rows:
        lines.append(f"| {name} | {n} | {n - round(s * n)} | {100 * s:.2f} |")
    total = sum(n for _, n, _ in rows)
    lines.append(f"| **total** | {total} | {total - round(overall * total)} | {100 * overall:.2f} |")
    return "\n".join(lines) + "\n"


def plot_sparsity(model: nn.Module, png_path: PathLike, title: str = "") -> None:
    """Bar plot of per-layer sparsity (%), one bar per masked layer, overall as a line."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    overall, _ = current_sparsity(model)
    rows = layer_rows(model)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(rows) + 2), 4))
    ax.bar(range(len(rows)), [100 * s for _, _, s in rows], color="tab:blue")
    ax.axhline(100 * overall, color="tab:red", linestyle="--", label=f"overall {100 * overall:.1f}%")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([n for n, _, _ in rows], rotation=90, fontsize=6)
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def write_sparsity_report(
    model: nn.Module, out_dir: PathLike, name: str = "sparsity", title: str = ""
) -> Tuple[Path, Optional[Path]]:
    """Write ``<out_dir>/<name>.md`` and ``<out_dir>/<name>.png``; returns both paths (the PNG
    path is None when matplotlib is not installed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{name}.md"
    md.write_text((f"# {title}\n\n" if title else "") + sparsity_table(model))
    png: Optional[Path] = out / f"{name}.png"
    try:
        plot_sparsity(model, png, title)
    except ImportError:
        png = None
    return md, png
