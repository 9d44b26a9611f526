"""Tests of uniform magnitude pruning and mixed-sparsity pruning (icefall/prune/baselines.py).

References: counts from the requested sparsity, a naive sort of |w| per layer, and the
per-layer sparsities reported by independently gated layers.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.prune.baselines import (
    FixedMaskLinear,
    magnitude_mask,
    mixed_sparsity_prune,
    uniform_magnitude_prune,
)
from icefall.prune.gates import add_gates, current_sparsity, remove_gates


def _mlp():
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.9, 1.0])
def test_uniform_magnitude_pruning_gives_exact_sparsity_per_layer(sparsity):
    model = _mlp()
    ref = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    names = uniform_magnitude_prune(model, r"^\d+$", sparsity)
    assert names == ["0", "2", "4"]
    for name in names:
        layer = model.get_submodule(name)
        assert isinstance(layer, FixedMaskLinear)
        w = ref[name]
        n = w.numel()  # 200, 600, 150: sparsity * n is an integer for every case
        assert int((~layer.weight_mask).sum()) == round(sparsity * n)
        # Naive reference: the round(s * n) smallest |w| are exactly the pruned ones.
        sorted_abs = sorted(w.abs().flatten().tolist())
        k = round(sparsity * n)
        pruned = w[~layer.weight_mask].abs()
        kept = w[layer.weight_mask].abs()
        if 0 < k < n:
            assert pruned.max().item() <= sorted_abs[k - 1] <= kept.min().item()
    _, per_layer = current_sparsity(model)
    assert per_layer == {n: pytest.approx(sparsity) for n in names}


def test_magnitude_mask_is_exact_with_ties():
    w = torch.tensor([[0.5, -0.5, 0.5, 0.1], [0.5, -0.5, 2.0, 0.1]])
    keep = magnitude_mask(w, 0.5)  # 4 of 8 pruned: both 0.1 and two of the six tied 0.5s
    assert int((~keep).sum()) == 4
    assert not keep[0, 3] and not keep[1, 3] and keep[1, 2]


def test_masks_stay_fixed_during_finetuning():
    torch.manual_seed(0)
    model = _mlp()
    uniform_magnitude_prune(model, r"^\d+$", 0.6)
    masks = {n: model.get_submodule(n).weight_mask.clone() for n in ("0", "2", "4")}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 10), torch.randint(0, 5, (64,))
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        for n, keep in masks.items():
            # Pruned entries get exactly zero gradient from the task.
            assert torch.all(model.get_submodule(n).weight.grad[~keep] == 0)
        opt.step()
    for n, keep in masks.items():
        layer = model.get_submodule(n)
        assert torch.equal(layer.weight_mask, keep)
    # The forward is exactly a linear layer with the pruned weights zeroed.
    layer = model[2]
    h = torch.randn(3, 20)
    torch.testing.assert_close(layer(h), h @ (layer.weight * masks["2"].float()).t() + layer.bias)
    assert current_sparsity(model)[1]["2"] == pytest.approx(0.6)


def test_unpruned_checkpoint_loads_into_pruned_model_and_mask_is_saved():
    model, ref = _mlp(), _mlp()
    uniform_magnitude_prune(model, r"^\d+$", 0.5)
    masks = [model[i].weight_mask.clone() for i in (0, 2, 4)]
    model.load_state_dict(ref.state_dict(), strict=True)
    assert all(torch.equal(model[i].weight_mask, m) for i, m in zip((0, 2, 4), masks))
    assert "2.weight_mask" in model.state_dict()
    other = _mlp()
    uniform_magnitude_prune(other, r"^\d+$", 0.1)
    other.load_state_dict(model.state_dict(), strict=True)  # resume restores the masks
    assert torch.equal(other[2].weight_mask, masks[1])


def test_mixed_sparsity_reproduces_gate_sparsities_on_uncompressed_model():
    torch.manual_seed(1)
    uncompressed = _mlp()
    gated = _mlp()
    gated.load_state_dict(uncompressed.state_dict())
    add_gates(gated, r"^\d+$")
    with torch.no_grad():  # stand-in for one-pass training: different thresholds per layer
        for i, t in zip((0, 2, 4), (0.05, 0.12, 0.02)):
            gated[i].threshold.fill_(t)
            gated[i].weight.mul_(1.1)  # weights moved during training
    _, gate_sparsity = current_sparsity(gated)
    assert len(set(gate_sparsity.values())) == 3

    fresh = _mlp()
    fresh.load_state_dict(uncompressed.state_dict())
    mixed_sparsity_prune(fresh, gate_sparsity)
    _, mixed = current_sparsity(fresh)
    for name, s in gate_sparsity.items():
        n = fresh.get_submodule(name).weight.numel()
        assert abs(mixed[name] - s) <= 0.5 / n
        # Magnitude-based on the uncompressed weights.
        w = uncompressed.get_submodule(name).weight
        keep = fresh.get_submodule(name).weight_mask
        if 0 < keep.sum() < n:
            assert w[~keep].abs().max() <= w[keep].abs().min()

    remove_gates(fresh)
    assert all(type(fresh[i]) is nn.Linear for i in (0, 2, 4))
    assert set(fresh.state_dict()) == set(uncompressed.state_dict())


def test_mixed_sparsity_rejects_non_linear():
    with pytest.raises(ValueError):
        mixed_sparsity_prune(_mlp(), {"1": 0.5})
