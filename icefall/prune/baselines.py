"""Pruning baselines of the self-pinching-gates paper, with masks fixed during fine-tuning.

- Uniform magnitude pruning (UMP): the same sparsity in every selected layer, the entries of
  smallest magnitude pruned.
- Mixed sparsity (the paper's "decoupled" variant): prune the *uncompressed* model by
  magnitude to per-layer sparsities found by the gates (``current_sparsity(gated)[1]``), then
  fine-tune with the masks fixed.

The pruned layers are ``FixedMaskLinear`` (an ``nn.Linear`` keeping the names ``weight`` and
``bias`` plus a boolean buffer ``weight_mask``); pruned entries get zero gradient because the
forward multiplies by the mask.  ``remove_gates`` folds them like gated layers.
"""
from __future__ import annotations

from typing import List, Mapping

import torch
import torch.nn as nn

from icefall.prune.gates import MaskedLinear, Patterns, replace_modules, select_linears


class FixedMaskLinear(MaskedLinear):
    """``nn.Linear`` whose weight is multiplied by a constant boolean mask (out, in)."""

    extra_keys = ("weight_mask",)

    @classmethod
    def from_linear(cls, lin: nn.Linear, mask: torch.Tensor) -> "FixedMaskLinear":
        """Wrap ``lin`` (sharing its Parameters) with ``mask`` (bool, shape of lin.weight)."""
        if mask.shape != lin.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight {tuple(lin.weight.shape)}")
        m = cls._sharing(lin)
        m.register_buffer("weight_mask", mask.to(device=lin.weight.device, dtype=torch.bool))
        return m

    def mask(self) -> torch.Tensor:
        return self.weight_mask.to(self.weight.dtype)


@torch.no_grad()
def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean keep-mask (shape of ``weight``) pruning exactly ``round(sparsity * numel)``
    entries of smallest |weight|; ties are broken by position so the count is exact."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    n = weight.numel()
    k = int(round(sparsity * n))
    order = torch.argsort(weight.detach().abs().flatten(), stable=True)
    keep = torch.ones(n, dtype=torch.bool, device=weight.device)
    keep[order[:k]] = False
    return keep.view_as(weight)


def mixed_sparsity_prune(model: nn.Module, layer_sparsity: Mapping[str, float]) -> List[str]:
    """Magnitude-prune each named ``nn.Linear`` to its own sparsity and fix the masks.

    ``layer_sparsity`` maps module names (as in ``model.named_modules()``) to sparsities in
    [0, 1].  Modifies ``model`` in place; returns the pruned layer names.
    """
    for name in layer_sparsity:
        if type(model.get_submodule(name)) is not nn.Linear:
            raise ValueError(f"{name} is not a plain nn.Linear")
    replace_modules(
        model,
        list(layer_sparsity),
        lambda name, lin: FixedMaskLinear.from_linear(
            lin, magnitude_mask(lin.weight, layer_sparsity[name])
        ),
    )
    return list(layer_sparsity)


def uniform_magnitude_prune(model: nn.Module, patterns: Patterns, sparsity: float) -> List[str]:
    """UMP: prune every ``nn.Linear`` matching ``patterns`` (see ``select_linears``) to the same
    ``sparsity`` by magnitude and fix the masks.  Returns the pruned layer names."""
    names = select_linears(model, patterns)
    if not names:
        raise ValueError(f"No nn.Linear module matches {patterns!r}")
    return mixed_sparsity_prune(model, {n: sparsity for n in names})

