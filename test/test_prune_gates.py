"""Tests of the self-pinching gates (icefall/prune/gates.py).

References: hand-computed masks, closed-form STE gradients of sigmoid((W^2 - t^2)/tau), a naive
soft-L0 sum, and a toy classification task trained with and without gates.
"""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.prune import toy
from icefall.prune.gates import (
    TRANSFORMER_PATTERNS,
    ZIPFORMER_PATTERNS,
    GateController,
    GatedLinear,
    add_gates,
    current_sparsity,
    gate_parameters,
    gate_regularizer,
    remove_gates,
    select_linears,
)


def _gated(weight, bias, t, tau=0.5):
    out_f, in_f = weight.shape
    g = GatedLinear(in_f, out_f, tau=tau)
    with torch.no_grad():
        g.weight.copy_(weight)
        g.bias.copy_(bias)
        g.threshold.fill_(t)
    return g


def test_forward_mask_is_threshold_rule():
    w = torch.tensor([[0.1, -0.5, 0.3], [-0.29, 0.0, 2.0]])
    b = torch.tensor([0.5, -1.0])
    g = _gated(w, b, t=0.3)
    # Kept where w^2 >= t^2: -0.5, 0.3 (equal to t is kept), 2.0.
    expected_mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    assert torch.equal(g.mask().detach(), expected_mask)
    assert torch.equal(g.binary_mask(), expected_mask)

    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]])
    # By hand: row 0 of W -> -0.5*x1 + 0.3*x2 + 0.5 ; row 1 -> 2.0*x2 - 1.0
    expected = torch.tensor(
        [[-0.5 * 2 + 0.3 * 3 + 0.5, 2.0 * 3 - 1.0], [-0.5 * 0.5 + 0.3 * 4 + 0.5, 2.0 * 4 - 1.0]]
    )
    torch.testing.assert_close(g(x), expected)

    overall, per_layer = current_sparsity(nn.Sequential(g))
    assert overall == pytest.approx(3 / 6) and per_layer == {"0": pytest.approx(0.5)}


def test_negative_threshold_acts_like_its_magnitude():
    w = torch.randn(4, 5)
    g_pos, g_neg = _gated(w, torch.zeros(4), 0.7), _gated(w, torch.zeros(4), -0.7)
    assert torch.equal(g_pos.binary_mask(), g_neg.binary_mask())


def _closed_form_grads(w, t, tau, G):
    """dL/dW and dL/dt for L with dL/dW_eff = G, W_eff = W * M_hard, STE via the soft mask."""
    s = torch.sigmoid((w * w - t * t) / tau)
    hard = (w * w >= t * t).float()
    ds = s * (1 - s) / tau
    dw = G * hard + G * w * ds * 2 * w
    dt = (G * w * ds * (-2 * t)).sum()
    return dw, dt


def test_straight_through_gradients_match_closed_form():
    torch.manual_seed(1)
    w = torch.randn(3, 4) * 0.5
    t, tau = 0.4, 0.3
    g = _gated(w, torch.zeros(3), t, tau)
    x = torch.randn(5, 4)
    c = torch.randn(5, 3)
    (g(x) * c).sum().backward()
    G = c.t() @ x  # dL/dW_eff, (out, in)
    dw, dt = _closed_form_grads(w, torch.tensor(t), tau, G)
    torch.testing.assert_close(g.weight.grad, dw)
    torch.testing.assert_close(g.threshold.grad, dt)
    assert g.weight.grad.abs().min() > 0  # pruned entries still receive gradient (via soft mask)
    assert g.threshold.grad.abs() > 0


def test_threshold_gradient_signs():
    torch.manual_seed(2)
    w = torch.randn(6, 6) * 0.3
    # Regularizer alone: d(soft L0)/dt = -2t/tau * sum s(1-s) / N < 0 for t > 0, so gradient
    # descent raises the threshold (prunes more); for t < 0 it lowers it (|t| grows).
    for t, sign in [(0.2, -1.0), (-0.2, 1.0)]:
        g = _gated(w, torch.zeros(6), t)
        m = nn.Sequential(g)
        gate_regularizer(m).backward()
        assert torch.sign(g.threshold.grad) == sign
        s = torch.sigmoid((w * w - t * t) / 0.5)
        expected = (-2 * t / 0.5 * s * (1 - s)).sum() / w.numel()
        torch.testing.assert_close(g.threshold.grad, expected)
    # A task that wants every weight kept (L = -sum(W_eff * W), dL/dW_eff = -W): pruning hurts,
    # so dL/dt > 0 and gradient descent lowers the threshold.
    g = _gated(w, torch.zeros(6), 0.2)
    (-(g.weight * g.mask()) * w).sum().backward()
    assert g.threshold.grad > 0


def test_regularizer_is_normalised_soft_l0():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    add_gates(model, r"^[02]$")
    with torch.no_grad():
        model[0].threshold.fill_(0.3)
        model[2].threshold.fill_(0.1)
    tau = 0.2
    for m in (model[0], model[2]):
        m.tau = tau
    naive = 0.0
    for m in (model[0], model[2]):
        for wij in m.weight.detach().flatten().tolist():
            naive += 1 / (1 + math.exp(-(wij**2 - m.threshold.item() ** 2) / tau))
    assert gate_regularizer(model).item() == pytest.approx(naive / (32 + 24), rel=1e-6)


class _Block(nn.Module):
    """A pre-norm Transformer block with fairseq/HuBERT-style names."""

    def __init__(self, d=8, ff=16):
        super().__init__()
        self.self_attn = nn.Module()
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, n, nn.Linear(d, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):  # (B, T, d)
        a = self.self_attn
        h = self.norm1(x)
        q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
        x = x + a.out_proj(F.scaled_dot_product_attention(q, k, v))
        return x + self.fc2(F.relu(self.fc1(self.norm2(x))))


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([_Block(), _Block()])
        self.proj = nn.Linear(8, 5)  # not part of a block: must stay ungated
        self.mha = nn.MultiheadAttention(8, 2)  # its out_proj is a Linear subclass: skipped

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.proj(x)


def test_add_gates_selects_six_linears_per_block_and_keeps_checkpoints_loadable():
    torch.manual_seed(4)
    ref = _Encoder()
    model = _Encoder()
    names = add_gates(model, TRANSFORMER_PATTERNS)
    expected = [
        f"layers.{i}.{n}"
        for i in range(2)
        for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                  "self_attn.out_proj", "fc1", "fc2")
    ]
    assert sorted(names) == sorted(expected)
    assert type(model.proj) is nn.Linear and not isinstance(model.mha.out_proj, GatedLinear)
    assert len(gate_parameters(model)) == 12

    # The unpruned checkpoint loads strictly; thresholds keep their initial value.
    model.load_state_dict(ref.state_dict(), strict=True)
    assert all(t.item() == pytest.approx(1e-5) for t in gate_parameters(model))
    sd = model.state_dict()
    assert set(sd) == set(ref.state_dict()) | {f"{n}.threshold" for n in expected}

    # Output equals the reference model with the threshold rule applied by hand.
    with torch.no_grad():
        for n in expected:
            g = model.get_submodule(n)
            g.threshold.fill_(0.15)
            w = ref.get_submodule(n).weight
            w.mul_((w * w >= 0.15**2).float())
    x = torch.randn(2, 7, 8)
    torch.testing.assert_close(model(x), ref(x))

    # Folding gives a plain model with the unpruned keys and the same outputs.
    y = model(x)
    remove_gates(model)
    assert set(model.state_dict()) == set(ref.state_dict())
    assert not any(isinstance(m, GatedLinear) for m in model.modules())
    torch.testing.assert_close(model(x), y)


def test_zipformer_patterns_match_icefall_names():
    names = [
        "encoders.0.layers.0.self_attn_weights.in_proj",
        "encoders.0.layers.0.self_attn1.in_proj",
        "encoders.0.layers.0.self_attn2.out_proj",
        "encoders.1.encoder.layers.2.feed_forward3.in_proj",
        "encoders.1.encoder.layers.2.feed_forward1.out_proj",
        "encoders.0.layers.0.nonlin_attention.in_proj",  # not one of the six
        "encoders.0.layers.0.conv_module1.in_proj",  # not one of the six
    ]
    root = nn.Module()
    for n in names:
        parent = root
        for part in n.split(".")[:-1]:
            if not hasattr(parent, part):
                setattr(parent, part, nn.Module())
            parent = getattr(parent, part)
        setattr(parent, n.split(".")[-1], nn.Linear(2, 2))
    assert sorted(select_linears(root, ZIPFORMER_PATTERNS)) == sorted(names[:5])


def test_add_gates_without_match_raises():
    with pytest.raises(ValueError):
        add_gates(nn.Sequential(nn.Linear(2, 2)), r"fc1$")


def test_controller_schedules_tau_and_eta():
    model = nn.Sequential(nn.Linear(3, 3))
    add_gates(model, "0")
    ctrl = GateController(target_sparsity=0.5, eta=2.0, total_steps=100)
    assert ctrl.update(model, 0, sparsity=0.1) == 2.0
    assert model[0].tau == pytest.approx(0.5)
    assert ctrl.update(model, 50, sparsity=0.5) == 0.0  # met: regulariser off
    assert model[0].tau == pytest.approx((0.5 + 0.01) / 2)  # cosine midpoint
    assert ctrl.update(model, 75, sparsity=0.49) == 2.0  # dropped below: on again
    assert model[0].tau == pytest.approx(0.01 + 0.49 * (1 + math.cos(0.75 * math.pi)) / 2)
    ctrl.update(model, 150, sparsity=0.9)
    assert model[0].tau == pytest.approx(0.01)
    taus = [ctrl.tau_at(s) for s in range(101)]
    assert all(a >= b for a, b in zip(taus, taus[1:]))
    # Without an explicit sparsity it is measured on the model (t=1e-5: nothing pruned).
    assert ctrl.update(model, 10) == 2.0
    other = GateController(0.9, 1.0, 10)
    other.load_state_dict(ctrl.state_dict())
    assert other.state_dict() == ctrl.state_dict()


@pytest.fixture(scope="module")
def one_thread():
    # Tiny matmuls: a second intra-op thread only adds synchronisation (badly so on a loaded
    # 2-core machine).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy_baseline(one_thread):
    """The dense toy model trained for 400 steps, and its test accuracy."""
    data = toy.toy_data()
    model = toy.toy_model()
    return model, toy.train(model, data, steps=400), data


@pytest.mark.parametrize("target", [0.5, 0.8])
def test_toy_model_reaches_target_sparsity_and_solves_task(target, toy_baseline):
    base, dense_acc, data = toy_baseline
    model = copy.deepcopy(base)
    add_gates(model, toy.LAYERS)
    acc = toy.train(model, data, steps=400, controller=GateController(target, 1.0, 400))
    overall, per_layer = current_sparsity(model)
    assert abs(overall - target) <= 0.01, overall
    assert len(per_layer) == 3
    # The dense model solves the task (the majority class is 29%), the pruned one nearly as well.
    assert dense_acc > 0.85
    assert acc > dense_acc - 0.03, (acc, dense_acc)
    # The pruned model really is sparse once the masks are folded in.
    remove_gates(model)
    zeros = sum(int((model[i].weight == 0).sum()) for i in (0, 2, 4))
    assert zeros / (16 * 64 + 64 * 64 + 64 * 4) == pytest.approx(overall, abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gates_on_cuda_match_cpu():
    torch.manual_seed(5)
    cpu = _gated(torch.randn(6, 5) * 0.5, torch.randn(6), 0.3, tau=0.2)
    gpu = _gated(cpu.weight.detach().cuda(), cpu.bias.detach().cuda(), 0.3, tau=0.2).cuda()
    x = torch.randn(4, 5)
    y_cpu, y_gpu = cpu(x), gpu(x.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu)
    y_cpu.square().sum().backward()
    y_gpu.square().sum().backward()
    torch.testing.assert_close(gpu.weight.grad.cpu(), cpu.weight.grad)
    torch.testing.assert_close(gpu.threshold.grad.cpu(), cpu.threshold.grad)
    assert current_sparsity(nn.Sequential(gpu)) == current_sparsity(nn.Sequential(cpu))


@pytest.mark.parametrize(
    "config, patterns, suffixes",
    [
        ("hubert-tiny", TRANSFORMER_PATTERNS,
         {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
          "fc1", "fc2"}),
        ("zipformer-tiny", ZIPFORMER_PATTERNS,
         {"self_attn_weights.in_proj", "self_attn1.in_proj", "self_attn1.out_proj",
          "self_attn2.in_proj", "self_attn2.out_proj"}
         | {f"feed_forward{i}.{p}" for i in (1, 2, 3) for p in ("in_proj", "out_proj")}),
    ],
)
def test_presets_on_project_encoders(config, patterns, suffixes):
    configs = pytest.importorskip("icefall.nn.configs")
    model = configs.build_encoder(config).eval()
    layers = {}  # block prefix -> gated suffixes
    for name in add_gates(model, patterns):
        prefix, _, suffix = name.partition(".layers.")
        block, _, rest = suffix.partition(".")
        layers.setdefault((prefix, block), set()).add(rest)
    assert layers and all(s == suffixes for s in layers.values()), layers
    # At the initial threshold (1e-5) almost nothing is pruned and the encoder still runs.
    wav, lens = torch.randn(2, 8000), torch.tensor([8000, 6000])
    with torch.no_grad():
        out, out_lens = model(wav, lens)[:2]
    assert torch.isfinite(out).all() and current_sparsity(model)[0] < 0.01
