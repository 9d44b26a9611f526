"""Scale-aware self-pinching gates (ScaleAwareGatedLinear): a threshold relative to rms(W).

Reference: the plain gates with one absolute threshold, which wipe out a layer of small weights
(the Zipformer's out_proj case), and the hand rule ``|W| >= t * rms(W)``.
"""
import pytest
import torch
import torch.nn as nn

from icefall.prune.gates import (
    GateController,
    GatedLinear,
    ScaleAwareGatedLinear,
    add_gates,
    current_sparsity,
    gate_parameters,
    gate_regularizer,
)


def _two_scales():
    """Two 32x32 layers with the same weight pattern, one at scale 1, one at scale 1e-3."""
    torch.manual_seed(0)
    w = torch.randn(32, 32)
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32))
    with torch.no_grad():
        model[0].weight.copy_(w)
        model[1].weight.copy_(w * 1e-3)
    return model, w


@pytest.mark.parametrize("scale", ["absolute", "rms"])
def test_mask_rule(scale):
    model, w = _two_scales()
    add_gates(model, r"^[01]$", scale=scale)
    kind = GatedLinear if scale == "absolute" else ScaleAwareGatedLinear
    assert all(type(m) is kind for m in model)
    with torch.no_grad():
        for m in model:
            m.threshold.fill_(0.5)
    rms = w.square().mean().sqrt()
    for m, s in zip(model, (1.0, 1e-3)):
        cut = 0.5 if scale == "absolute" else 0.5 * rms * s
        expected = ((w * s).abs() >= cut).float()
        assert torch.equal(m.binary_mask(), expected)
    _, per_layer = current_sparsity(model)
    if scale == "absolute":
        assert per_layer["1"] == 1.0 and per_layer["0"] < 0.5  # the small layer is gone
    else:
        assert per_layer["0"] == per_layer["1"] < 0.5  # same cut relative to the scale


def test_bad_scale_name():
    with pytest.raises(ValueError, match="gate scale"):
        add_gates(nn.Sequential(nn.Linear(2, 2)), "0", scale="max")


@pytest.mark.parametrize("scale", ["absolute", "rms"])
def test_one_pass_schedule_keeps_the_small_layer_alive_only_when_scale_aware(scale):
    """Thresholds trained by the regulariser (Adam, as the recipe) to 30% overall sparsity with
    the paper's controller: the absolute gates take the whole budget from the small-weight
    layer (> 90% of it pruned, the large one untouched)."""
    model, _ = _two_scales()
    add_gates(model, r"^[01]$", scale=scale)
    opt = torch.optim.Adam(gate_parameters(model), lr=2e-3)
    ctrl = GateController(target_sparsity=0.3, eta=1.0, total_steps=200)
    for step in range(200):
        eta = ctrl.update(model, step)
        if eta == 0:
            break
        opt.zero_grad()
        (eta * gate_regularizer(model)).backward()
        opt.step()
    overall, per_layer = current_sparsity(model)
    assert overall >= 0.3
    if scale == "absolute":
        assert per_layer["1"] > 0.9 and per_layer["0"] < 0.05
    else:
        assert 0.2 < per_layer["1"] < 0.5 and 0.2 < per_layer["0"] < 0.5


def test_scale_aware_gradient_reaches_weights_and_threshold():
    torch.manual_seed(0)
    g = ScaleAwareGatedLinear.from_linear(nn.Linear(4, 3), threshold_init=0.3)
    g.tau = 0.5
    g.soft_mask().sum().backward()
    assert g.threshold.grad is not None and g.threshold.grad < 0  # raising t lowers the L0
    assert g.weight.grad is not None and g.weight.grad.abs().sum() > 0


def test_recipe_option_selects_scale_aware_gates(tmp_path):
    from icefall.prune.finetune import PruneHooks, get_parser
    from icefall.utils import AttributeDict

    args = get_parser().parse_args(["--method", "gates", "--gate-scale", "rms", "--patterns", r"^[01]$"])
    model, _ = _two_scales()
    PruneHooks().setup_model(model, AttributeDict(vars(args)))
    assert all(type(m) is ScaleAwareGatedLinear for m in model)
