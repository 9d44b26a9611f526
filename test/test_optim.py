"""Tests of icefall/optim.py (ScaledAdam, Eden)."""
import io
import math

import pytest
import torch
from torch import nn

from icefall.nn.configs import build_encoder
from icefall.nn.scaling import set_batch_count
from icefall.optim import Eden, ScaledAdam


def eden_formula(base, batch, epoch, lr_batches, lr_epochs, warmup_batches=500.0, warmup_start=0.5):
    warm = 1.0 if batch >= warmup_batches else warmup_start + (1 - warmup_start) * batch / warmup_batches
    return (base * ((batch**2 + lr_batches**2) / lr_batches**2) ** -0.25
            * ((epoch**2 + lr_epochs**2) / lr_epochs**2) ** -0.25 * warm)


def test_eden_matches_formula():
    p = nn.Parameter(torch.zeros(3))
    opt = ScaledAdam([p], lr=0.045)
    sched = Eden(opt, lr_batches=5000, lr_epochs=3.5, warmup_batches=500, warmup_start=0.5)
    assert sched.get_last_lr() == [pytest.approx(0.045 * 0.5)]  # batch 0: warmup_start
    # hand-computed: batch = lr_batches, epoch = lr_epochs, past warmup -> base * 2^-0.25 * 2^-0.25
    sched.step_epoch(3.5)
    sched.step_batch(5000)
    assert sched.get_last_lr()[0] == pytest.approx(0.045 / math.sqrt(2), rel=1e-12)
    assert opt.param_groups[0]["lr"] == sched.get_last_lr()[0]
    for batch, epoch in [(0, 0), (250, 0), (499, 1), (500, 2), (12345, 7), (100000, 30)]:
        sched.step_epoch(epoch)
        sched.step_batch(batch)
        assert sched.get_last_lr()[0] == pytest.approx(eden_formula(0.045, batch, epoch, 5000, 3.5), rel=1e-12)
    assert sched.get_last_lr()[0] == pytest.approx(0.045 * (1 + 20**2) ** -0.25 * (1 + (30 / 3.5) ** 2) ** -0.25)
    # step_batch() without argument counts up
    sched.step_batch(10)
    sched.step_batch()
    assert sched.batch == 11
    # state round trip
    state = sched.state_dict()
    sched2 = Eden(ScaledAdam([nn.Parameter(torch.zeros(3))], lr=0.045), 5000, 3.5)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_first_step_is_sign_times_rms_times_lr():
    # step 1: v = (1 - b2) g^2, bias-corrected -> g^2, so the direction is sign(g); momentum
    # keeps (1 - b1) of it; non-scalars move by lr * rms(p), scalars by lr * scalar_lr_scale.
    torch.manual_seed(0)
    big = nn.Parameter(torch.randn(4, 5) * 3.0)
    small = nn.Parameter(torch.randn(4, 5) * 0.01)
    scalar = nn.Parameter(torch.tensor(0.7))
    params = [big, small, scalar]
    before = [p.detach().clone() for p in params]
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    lr, b1 = 0.05, 0.9
    ScaledAdam(params, lr=lr, betas=(b1, 0.98), scalar_lr_scale=0.1, eps=1e-12).step()
    for p, p0, g in zip(params[:2], before[:2], grads[:2]):
        rms = p0.pow(2).mean().sqrt()
        torch.testing.assert_close(p.detach(), p0 - (1 - b1) * lr * rms * g.sign(), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(scalar.detach(), before[2] - (1 - b1) * lr * 0.1 * grads[2].sign())


def test_scalar_clamped():
    s = nn.Parameter(torch.tensor(9.99))
    opt = ScaledAdam([s], lr=10.0, scalar_max=10.0)
    s.grad = torch.tensor(-1.0)
    opt.step()
    assert s.item() == 10.0


def test_scale_update_formula():
    # With momentum off, the size update at step 3 (size_update_period = 4) adds
    # p * scale_step, scale_step = -size_lr * sum(<p,g>) / sqrt(mean(<p,g>^2)) (the bias
    # corrections cancel) = +4 * lr * scalar_lr_scale when every <p,g> < 0, capped so that
    # rms(p) does not pass param_max_rms.  Scalar_lr_scale does nothing else for a matrix, so
    # two runs differing only in it differ exactly by that term.
    lr = 0.01

    def run(scalar_lr_scale, param_max_rms=3.0):
        torch.manual_seed(0)
        w = nn.Parameter(torch.randn(6, 5))
        g = -w.detach().clone()  # <p, g> < 0 throughout: the loss wants a larger w
        opt = ScaledAdam([w], lr=lr, betas=(0.0, 0.98), scalar_lr_scale=scalar_lr_scale,
                         param_max_rms=param_max_rms)
        for _ in range(3):
            w.grad = g.clone()
            opt.step()
        w_before = w.detach().clone()
        w.grad = g.clone()
        opt.step()
        return w_before, w.detach().clone()

    w3, base = run(0.0)
    _, scaled = run(0.5)
    torch.testing.assert_close(scaled - base, w3 * (4 * lr * 0.5), atol=1e-5, rtol=1e-3)
    rms3 = w3.pow(2).mean().sqrt().item()
    _, capped = run(0.5, param_max_rms=rms3 * 1.01)  # room for a 1% step only
    torch.testing.assert_close(capped - base, w3 * 0.01, atol=1e-5, rtol=1e-3)


def _clipping_steps():
    """A step function ``norm -> norm after clipping`` of ScaledAdam with lr = 0, which keeps the
    parameter (rms = 1) fixed, so that the normalized grad norm is ||g||."""
    p = nn.Parameter(torch.ones(4, 4))
    opt = ScaledAdam([p], lr=0.0, clipping_scale=2.0, clipping_update_period=100)
    direction = torch.randn(4, 4)
    direction /= direction.norm()

    def step(norm):
        p.grad = direction * norm
        opt.step()
        return p.grad.norm().item()

    return step


def test_clipping_uses_median_of_recent_norms():
    step = _clipping_steps()
    assert step(1000.0) == pytest.approx(1000.0)  # step 0: never clipped
    for k in range(1, 10):  # steps 1..9: no threshold yet
        assert step(float(k)) == pytest.approx(k)
    # step 10: threshold = 2 (early steps) * clipping_scale * median(1..9, 100) = 4 * 5 = 20
    assert step(100.0) == pytest.approx(20.0, rel=1e-5)
    assert step(15.0) == pytest.approx(15.0, rel=1e-5)  # below threshold: untouched
    assert step(40.0) == pytest.approx(20.0, rel=1e-5)


def _toy_problem():
    torch.manual_seed(0)
    x = torch.randn(128, 16)
    y = torch.tanh(x @ torch.randn(16, 4) / 4)
    return x, y


def _train(lr, steps=60, model=None, opt=None, sched=None, start=0):
    x, y = _toy_problem()
    if model is None:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
        opt = ScaledAdam(model.named_parameters(), lr=lr, clipping_scale=2.0)
        sched = Eden(opt, lr_batches=20, lr_epochs=2, warmup_batches=5)
    for i in range(start, start + steps):
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step_batch(i + 1)
        if (i + 1) % 25 == 0:
            sched.step_epoch()
    return loss.item(), model, opt, sched


def test_good_lr_trains_faster_than_poor_lr():
    good, *_ = _train(0.05)
    poor, *_ = _train(0.0005)
    initial = (lambda xy: xy[1].pow(2).mean().item())(_toy_problem())
    assert good < 0.5 * poor
    assert good < 0.5 * initial


def test_state_dict_roundtrip_continues_bitwise():
    _, model, opt, sched = _train(0.05, steps=45)  # past size updates and early clip thresholds
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    _, model_a, _, _ = _train(0.05, steps=30, model=model, opt=opt, sched=sched, start=45)

    buf.seek(0)
    ckpt = torch.load(buf)
    torch.manual_seed(123)  # different init, must be overwritten by the checkpoint
    model_b = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    model_b.load_state_dict(ckpt["model"])
    opt_b = ScaledAdam(model_b.named_parameters(), lr=0.05, clipping_scale=2.0)
    opt_b.load_state_dict(ckpt["opt"])
    sched_b = Eden(opt_b, lr_batches=20, lr_epochs=2, warmup_batches=5)
    sched_b.load_state_dict(ckpt["sched"])
    _train(0.05, steps=30, model=model_b, opt=opt_b, sched=sched_b, start=45)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_steps_stay_finite(dtype):
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except Exception as e:  # pragma: no cover
        pytest.skip(f"CPU autocast with {dtype} unsupported: {e}")
    torch.manual_seed(0)
    model = build_encoder("zipformer-tiny").train()
    opt = ScaledAdam(model.parameters(), lr=0.045, clipping_scale=2.0)
    wav = torch.randn(2, 4000)
    for step in range(2):
        set_batch_count(model, step)
        with torch.autocast("cpu", dtype=dtype):
            y, _ = model(wav, torch.tensor([4000, 3000]))
            loss = y.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_clipping_threshold_is_icefalls_order_statistic():
    # icefall takes sorted(norms)[(n // 4) * 2]: for 20 norms the 11th smallest, not the lower
    # median (the 10th).
    step = _clipping_steps()
    step(1.0)  # step 0
    for norm in [1, 2, 3, 4, 5, 6, 7, 8, 9, 100] + list(range(10, 19)):  # steps 1..19
        step(float(norm))
    # step 20: norms of steps 1..20 sorted = 1..18, 100, 1000; index 10 -> 11; 2 (early) * 2 * 11
    assert step(1000.0) == pytest.approx(44.0, rel=1e-5)


def test_infinite_gradient_norm_zeroes_the_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))
    opt = ScaledAdam(model.named_parameters(), lr=0.01, clipping_scale=2.0)
    x = torch.randn(16, 8)
    for _ in range(12):  # past step 10, where the first threshold is set
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    opt.zero_grad()
    model(x).pow(2).sum().backward()
    model[0].weight.grad[0, 0] = float("inf")  # one bad element
    deltas = [opt.state[q]["delta"].clone() for q in model.parameters()]
    opt.step()
    for name, q in model.named_parameters():
        assert torch.isfinite(q).all(), name
        assert torch.count_nonzero(q.grad) == 0, name
    # The step applied momentum only: each parameter moved by beta1 * its stored delta.
    beta1 = opt.param_groups[0]["betas"][0]
    for q, delta in zip(model.parameters(), deltas):
        torch.testing.assert_close(opt.state[q]["delta"], delta * beta1)


def test_parameter_without_grad_keeps_its_momentum():
    a = nn.Parameter(torch.randn(4, 4))
    b = nn.Parameter(torch.randn(4, 4))
    opt = ScaledAdam([a, b], lr=0.01)
    a.grad, b.grad = torch.randn(4, 4), torch.randn(4, 4)
    b0 = b.detach().clone()
    opt.step()
    first_move = b.detach() - b0
    assert first_move.abs().max() > 0
    a.grad, b.grad = torch.randn(4, 4), None  # b unused this step (e.g. a dropped layer)
    b1 = b.detach().clone()
    opt.step()
    beta1 = opt.param_groups[0]["betas"][0]
    torch.testing.assert_close(b.detach() - b1, beta1 * first_move)


def test_icefall_named_params_groups():
    def make():
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))

    m1, m2 = make(), make()
    opt1 = ScaledAdam([{"named_params": list(m1.named_parameters()), "lr": 0.02}], lr=0.5)
    opt2 = ScaledAdam(list(m2.parameters()), lr=0.02)
    x = torch.randn(5, 4)
    for m, opt in ((m1, opt1), (m2, opt2)):
        for _ in range(3):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()
    for q1, q2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(q1, q2)
    with pytest.raises(ValueError, match="both 'params' and 'named_params'"):
        ScaledAdam([{"params": list(m1.parameters()), "named_params": list(m1.named_parameters())}])
