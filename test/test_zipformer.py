"""Tests of icefall/nn/zipformer.py and icefall/nn/scaling.py."""
import math
import random

import pytest
import torch

from icefall.nn.configs import ConfigError, build_encoder, count_parameters
from icefall.nn.scaling import (
    BALANCER_LIMITS,
    Balancer,
    BiasNorm,
    ScheduledFloat,
    Whiten,
    set_batch_count,
    swoosh_l,
    swoosh_r,
    whitening_metric,
)
from icefall.nn.zipformer import (
    CompactRelPositionalEncoding,
    RelPositionAttentionWeights,
    Zipformer2,
    rel_to_abs,
)


def tiny_zipformer(**kw) -> Zipformer2:
    args = dict(
        output_downsampling_factor=1, downsampling_factor=(1, 2, 4, 2), encoder_dim=(32, 48, 64, 48),
        num_encoder_layers=1, feedforward_dim=(64, 96, 128, 96), encoder_unmasked_dim=(16, 32, 32, 32),
        num_heads=2, query_head_dim=8, pos_head_dim=4, value_head_dim=8, pos_dim=16,
        cnn_module_kernel=(7, 7, 5, 7),
    )
    args.update(kw)
    return Zipformer2(**args)


# ------------------------------------------------------------------------- scaling blocks


def test_scheduled_float_piecewise_linear():
    s = ScheduledFloat((0.0, 0.3), (100.0, 0.1), (300.0, 0.0), default=0.7)
    assert float(s) == 0.7  # batch count unknown -> default
    s.batch_count = 50.0
    assert float(s) == pytest.approx(0.2)
    s.batch_count = 200.0
    assert float(s) == pytest.approx(0.05)
    s.batch_count = 1e6
    assert float(s) == 0.0
    s.eval()
    assert float(s) == 0.7  # eval mode -> default
    m = torch.nn.Sequential(torch.nn.Module())
    m[0].rate = ScheduledFloat((0.0, 1.0), (10.0, 0.0))
    set_batch_count(m, 5)
    assert float(m[0].rate) == pytest.approx(0.5)


@pytest.mark.parametrize("x", [-30.0, -1.0, 0.0, 0.5, 3.0, 80.0])
def test_swoosh_formulas(x):
    t = torch.tensor([x], dtype=torch.float64)
    ref_r = math.log1p(math.exp(x - 1)) - 0.08 * x - 0.313261687
    ref_l = math.log1p(math.exp(x - 4)) - 0.08 * x - 0.035
    assert swoosh_r(t).item() == pytest.approx(ref_r, abs=1e-9)
    assert swoosh_l(t).item() == pytest.approx(ref_l, abs=1e-9)
    assert abs(swoosh_r(torch.zeros(1)).item()) < 1e-6  # SwooshR(0) = 0 by construction


def test_biasnorm_matches_formula():
    norm = BiasNorm(6)
    with torch.no_grad():
        norm.bias.copy_(torch.arange(6.0) / 10)
        norm.log_scale.fill_(0.3)
    x = torch.randn(3, 5, 6)
    ref = torch.empty_like(x)
    for idx in range(15):
        v = x.view(15, 6)[idx]
        ref.view(15, 6)[idx] = v / ((v - norm.bias.detach()) ** 2).mean().sqrt() * math.exp(0.3)
    torch.testing.assert_close(norm(x), ref)


def test_balancer_identity_forward_and_pushes_violating_channel():
    torch.manual_seed(0)
    bal = Balancer(2, channel_dim=-1, min_positive=0.05, max_positive=0.95, min_abs=0.2,
                   max_abs=100.0, prob=1.0)
    x = torch.randn(1000, 2)
    x[:, 0] = x[:, 0].abs() + 3.0  # always positive: violates max_positive
    x.requires_grad_(True)
    y = bal(x)
    assert torch.equal(y, x)
    g = torch.randn(1000, 2) * 0.1
    y.backward(g)
    extra = x.grad - g
    # gradient descent on x with the extra term lowers channel 0; channel 1 is within limits.
    assert extra[:, 0].mean() > 0
    assert extra[:, 1].abs().max() == 0
    # eval mode: plain identity, gradient untouched
    bal.eval()
    x2 = x.detach().clone().requires_grad_(True)
    bal(x2).backward(g)
    assert torch.equal(x2.grad, g)


def test_balancer_limit_formulas():
    from scipy.stats import norm

    from icefall.nn.scaling import _proportion_positive_to_mean as limit

    for p in (0.05, 0.3, 0.525, 0.95):
        # "gaussian": the mean/std of a unit Gaussian with P(x > 0) = p
        assert limit(p, "gaussian") == pytest.approx(norm.ppf(p), abs=1e-6)
    # "icefall": the value icefall's scaling.py quotes for _approx_inverse_erf(0.05)
    assert limit(0.525, "icefall") == pytest.approx(0.0407316414078772, abs=1e-10)
    assert limit(0.05, "icefall") == pytest.approx(0.8139535143 * math.atanh(-0.9), abs=1e-9)
    assert math.isfinite(limit(1.0, "icefall")) and math.isfinite(limit(0.0, "gaussian"))


@pytest.mark.parametrize("limits", BALANCER_LIMITS)
def test_balancer_limits_decide_which_channels_are_pushed(limits):
    # mean/std = 0.2 lies inside the "gaussian" max_positive=0.6 limit (0.253) and outside the
    # "icefall" one (0.165): only the latter pushes the channel down.
    torch.manual_seed(0)
    z = torch.randn(4000, 1)
    x = ((z - z.mean()) / z.std(unbiased=False) + 0.2).requires_grad_(True)
    bal = Balancer(1, channel_dim=-1, min_positive=0.0, max_positive=0.6, min_abs=0.0, max_abs=100.0,
                   prob=1.0, limits=limits)
    g = torch.randn(4000, 1) * 0.1
    bal(x).backward(g)
    extra = x.grad - g
    if limits == "gaussian":
        assert extra.abs().max() == 0
    else:
        assert extra.mean() > 0


def test_balancer_limits_config_reaches_every_balancer():
    for limits in BALANCER_LIMITS:
        speech = build_encoder("zipformer-tiny", frontend="fbank", balancer_limits=limits)
        found = {m.limits for m in speech.modules() if isinstance(m, Balancer)}
        assert found == {limits}
        assert any(isinstance(m, Balancer) for m in speech.frontend.modules())
    with pytest.raises(ConfigError, match="balancer_limits"):
        build_encoder("zipformer-tiny", balancer_limits="exact")


def test_whitening_metric_values():
    torch.manual_seed(0)
    white = torch.randn(200000, 4)
    assert whitening_metric(white, 1).item() == pytest.approx(1.0, abs=0.03)
    rank1 = torch.randn(5000, 1) * torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    # covariance lambda v v^T -> metric = number of channels
    assert whitening_metric(rank1, 1).item() == pytest.approx(4.0, rel=1e-3)


def test_whiten_gradient_reduces_metric():
    torch.manual_seed(0)
    w = Whiten(1, whitening_limit=1.5, prob=1.0, grad_scale=1.0)
    x = (torch.randn(500, 4) @ torch.tensor([[3.0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    x.requires_grad_(True)
    y = w(x)
    assert torch.equal(y, x)
    y.backward(torch.zeros_like(x) + 1e-3)
    before = whitening_metric(x.detach(), 1)
    after = whitening_metric(x.detach() - 0.1 * x.grad / x.grad.norm() * x.detach().norm(), 1)
    assert after < before


# ------------------------------------------------------------------------- attention


def test_rel_to_abs_matches_indexing():
    B, H, T = 2, 3, 5
    pos = torch.randn(B, H, T, 2 * T - 1)
    out = rel_to_abs(pos)
    for i in range(T):
        for j in range(T):
            # column r holds offset r - (T - 1); we want offset j - i
            torch.testing.assert_close(out[..., i, j], pos[..., i, (j - i) + T - 1])


def test_relpos_attention_weights_match_naive():
    torch.manual_seed(0)
    C, H, dq, dp, pos_dim, T = 16, 2, 4, 3, 8, 6
    mod = RelPositionAttentionWeights(C, pos_dim, H, dq, dp).eval()
    enc = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.0).eval()
    x = torch.randn(1, T, C)
    lens = torch.tensor([4])
    pad = torch.arange(T)[None] >= lens[:, None]
    w = mod(x, enc(T, x.device, x.dtype), key_padding_mask=pad)

    proj = mod.in_proj(x)[0]
    q, k, p = proj.split([H * dq, H * dq, H * dp], dim=-1)
    pe_proj = mod.linear_pos(enc.encode(torch.arange(-(T - 1), T)))  # offsets -(T-1)..T-1
    for h in range(H):
        scores = torch.empty(T, T)
        for i in range(T):
            for j in range(T):
                off = j - i
                scores[i, j] = (q[i, h * dq:(h + 1) * dq] @ k[j, h * dq:(h + 1) * dq]
                                + p[i, h * dp:(h + 1) * dp] @ pe_proj[off + T - 1, h * dp:(h + 1) * dp])
        scores[:, 4:] = float("-inf")
        torch.testing.assert_close(w[0, h], scores.softmax(-1), atol=1e-5, rtol=1e-5)
    assert torch.all(w[..., 4:] == 0)


def test_positional_encoding_depends_only_on_offset():
    enc = CompactRelPositionalEncoding(16, dropout_rate=0.0).eval()
    a = enc(5, torch.device("cpu"), torch.float32)[0]  # offsets -4..4
    b = enc(40, torch.device("cpu"), torch.float32)[0]  # offsets -39..39
    torch.testing.assert_close(a, b[39 - 4:39 + 5])
    assert torch.all(a[:, -1] == 1.0)
    assert (a[4] - a[5]).norm() > (b[0] - b[1]).norm()  # far offsets are compressed


# ------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("out_ds", [1, 2])
def test_padding_never_leaks(out_ds):
    torch.manual_seed(0)
    model = tiny_zipformer(output_downsampling_factor=out_ds).eval()
    lens = torch.tensor([37, 23, 10, 1])
    x = torch.randn(4, 37, 32)
    x_pad = x.clone()
    for b, n in enumerate(lens):
        x_pad[b, n:] = 100.0 * torch.randn(37 - n, 32)  # loud garbage in the padding
    with torch.no_grad():
        out, out_lens, hidden = model(x_pad, lens, return_hidden=True)
        assert out.shape == (4, math.ceil(37 / out_ds), 64)
        assert out_lens.tolist() == [math.ceil(n / out_ds) for n in lens.tolist()]
        assert len(hidden) == 4 and [h.shape[-1] for h in hidden] == [32, 48, 64, 48]
        for b, n in enumerate(lens.tolist()):
            o1, l1, h1 = model(x[b:b + 1, :n], lens[b:b + 1], return_hidden=True)
            m = l1.item()
            assert m == out_lens[b]
            torch.testing.assert_close(out[b, :m], o1[0], atol=2e-5, rtol=1e-4)
            assert torch.all(out[b, m:] == 0)
            for hb, h1b in zip(hidden, h1):
                torch.testing.assert_close(hb[b, :m], h1b[0], atol=2e-5, rtol=1e-4)


def test_output_dim_takes_channels_from_latest_stack():
    torch.manual_seed(0)
    model = tiny_zipformer().eval()  # dims (32, 48, 64, 48)
    stack_outputs = []
    for stack in model.encoders:
        stack.register_forward_hook(lambda mod, inp, out: stack_outputs.append(out))
    with torch.no_grad():
        out, _ = model(torch.randn(1, 12, 32), torch.tensor([12]))
    assert model.output_dim == 64 and out.shape == (1, 12, 64)
    torch.testing.assert_close(out[..., :48], stack_outputs[3])  # latest stack with these dims
    torch.testing.assert_close(out[..., 48:], stack_outputs[2][..., 48:])


def test_training_mode_runs_and_feature_masks():
    torch.manual_seed(0)
    random.seed(0)
    model = tiny_zipformer().train()
    set_batch_count(model, 1000)
    x = torch.randn(64, 40, 32)
    masks = model.get_feature_masks(x)
    assert [m.shape for m in masks] == [(64, 40, 32), (64, 20, 48), (64, 10, 64), (64, 20, 48)]
    m0 = masks[0]
    assert torch.all(m0[..., :16] == 1)  # encoder_unmasked_dim
    frac_band1 = 1 - m0[..., 16:24].mean().item()  # ~12.5% of frames zeroed
    frac_band2 = 1 - m0[..., 24:].mean().item()  # ~23.4% (1 - 0.875^2)
    assert 0.09 < frac_band1 < 0.16 and 0.19 < frac_band2 < 0.28
    y, y_lens = model(x[:4], torch.tensor([40, 30, 20, 9]))
    loss = y.pow(2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 0 and all(torch.isfinite(g).all() for g in grads)


def test_attention_weights_computed_once_per_layer():
    model = tiny_zipformer().eval()
    calls = []
    for m in model.modules():
        if isinstance(m, RelPositionAttentionWeights):
            m.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.randn(1, 9, 32), torch.tensor([9]))
    assert len(calls) == sum(model.num_encoder_layers) == 4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_backward_finite(dtype):
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except Exception as e:  # pragma: no cover - depends on the torch build
        pytest.skip(f"CPU autocast with {dtype} unsupported: {e}")
    torch.manual_seed(0)
    model = build_encoder("zipformer-tiny").train()
    set_batch_count(model, 100)
    wav = torch.randn(2, 16000)
    with torch.autocast("cpu", dtype=dtype):
        y, y_lens = model(wav, torch.tensor([16000, 11000]))
    assert torch.isfinite(y).all()
    y.float().pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name,target", [("zipformer-ssl-base", 95e6), ("zipformer-ssl-large", 306e6)])
def test_parameter_counts(name, target):
    model = build_encoder(name)
    n = count_parameters(model)
    assert abs(n - target) / target < 0.03, (name, n)
    assert model.output_dim == max(model.encoder.encoder_dim)
    assert model.frontend.output_dim == model.encoder.encoder_dim[0]
