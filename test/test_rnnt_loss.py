"""Tests of icefall.asr.rnnt_loss against k2's published numbers, a naive
per-cell dynamic programme written here, and mathematical properties."""

import pytest
import torch

from icefall.asr import rnnt_loss as R

NEG_INF = float("-inf")
RNNT_TYPES = ["regular", "modified", "constrained"]



# --------------------------------------------------------------------------
# Naive references (scalar loops, autograd for the gradients)
# --------------------------------------------------------------------------
def _logadd(terms):
    terms = [x for x in terms if not (torch.isinf(x) and x < 0)]
    if not terms:
        return torch.tensor(NEG_INF, dtype=torch.float64)
    return torch.logsumexp(torch.stack(terms), dim=0)


def naive_transducer_loss(logits, symbols, lengths, blank, rnnt_type, delay_penalty=0.0):
    """-log p(y|x) straight from the definition of each transducer topology.

    logits (B, T, S+1, C); lengths: list of (S_b, T_b).
    A symbol emitted on frame t scores an extra delay_penalty * ((T_b-1)/2 - t).
    """
    losses = []
    for b, (S, T) in enumerate(lengths):
        lp = logits[b].log_softmax(-1)  # (T, S+1, C)
        y = symbols[b]

        def emit(t, s):  # score of emitting y[s] on frame t from context s
            bonus = delay_penalty * ((T - 1) / 2 - t)
            score = lp[t, s, y[s]] + bonus
            if rnnt_type == "constrained":  # forced blank of the next context
                score = score + lp[t, s + 1, blank]
            return score

        if rnnt_type == "regular":
            # a[t][s]: emitted s symbols, currently on frame t (not yet left it)
            a = {(0, 0): torch.tensor(0.0, dtype=logits.dtype)}
            for t in range(T):
                for s in range(S + 1):
                    if (t, s) == (0, 0):
                        continue
                    terms = []
                    if t > 0:
                        terms.append(a[t - 1, s] + lp[t - 1, s, blank])
                    if s > 0:
                        terms.append(a[t, s - 1] + emit(t, s - 1))
                    a[t, s] = _logadd(terms)
            total = a[T - 1, S] + lp[T - 1, S, blank] if T > 0 else torch.tensor(
                0.0 if S == 0 else NEG_INF
            )
        else:
            # exactly one output (blank or symbol) per frame
            a = {(0, s): torch.tensor(0.0 if s == 0 else NEG_INF) for s in range(S + 1)}
            for t in range(T):
                for s in range(S + 1):
                    terms = [a[t, s] + lp[t, s, blank]]
                    if s > 0:
                        terms.append(a[t, s - 1] + emit(t, s - 1))
                    a[t + 1, s] = _logadd(terms)
            total = a[T, S]
        losses.append(-total)
    return torch.stack(losses)


def naive_recursion(px, py, boundary):
    """k2's recursion, one cell at a time."""
    modified = px.shape[2] == py.shape[2]
    out = []
    for b, (s0, t0, s1, t1) in enumerate(boundary.tolist()):
        p = {}
        for s in range(s0, s1 + 1):
            for t in range(t0, t1 + 1):
                if (s, t) == (s0, t0):
                    p[s, t] = torch.tensor(0.0, dtype=px.dtype)
                    continue
                terms = []
                tx = t - 1 if modified else t
                if s > s0 and tx >= t0:
                    terms.append(p[s - 1, tx] + px[b, s - 1, tx])
                if t > t0:
                    terms.append(p[s, t - 1] + py[b, s, t - 1])
                p[s, t] = _logadd(terms)
        out.append(p[s1, t1])
    return torch.stack(out)


def random_case(B=3, S=4, T=6, C=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, S + 1, C, generator=g, dtype=dtype)
    symbols = torch.randint(1, C, (B, S), generator=g)
    # different lengths per sequence, modified/constrained need T_b >= S_b
    lengths = [(S, T), (S - 1, T - 1), (2, S)][:B]
    boundary = torch.tensor([[0, 0, s, t] for s, t in lengths], dtype=torch.int64)
    return logits, symbols, lengths, boundary


# --------------------------------------------------------------------------
# k2's basic example (numbers from k2/python/tests/rnnt_loss_test.py)
# --------------------------------------------------------------------------
K2_EXPECTED = {"regular": 7.504013356021812, "modified": 6.545785004193915,
               "constrained": 9.658769328591465}


@pytest.mark.parametrize("rnnt_type", RNNT_TYPES)
def test_k2_basic_example(rnnt_type):
    lm = torch.tensor([[[0, 0, 1], [0, 1, 1], [1, 0, 1], [2, 2, 0]]], dtype=torch.float)  # (B, S+1, C)
    am = torch.tensor([[[0, 1, 2], [0, 0, 0], [0, 2, 4], [0, 3, 3]]], dtype=torch.float)  # (B, T, C)
    symbols = torch.tensor([[0, 1, 0]])
    expected = K2_EXPECTED[rnnt_type]
    kw = dict(termination_symbol=2, rnnt_type=rnnt_type, reduction="none")
    px, py = R.get_rnnt_logprobs(lm, am, symbols, 2, rnnt_type=rnnt_type)
    assert px.shape == ((1, 3, 5) if rnnt_type == "regular" else (1, 3, 4))
    assert py.shape == (1, 4, 4)
    losses = [
        -R.mutual_information_recursion(px, py),
        R.rnnt_loss_simple(lm, am, symbols, **kw),
        R.rnnt_loss_smoothed(lm, am, symbols, lm_only_scale=0.0, am_only_scale=0.0, **kw),
        R.rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, **kw),
    ]
    for loss in losses:
        assert loss.item() == pytest.approx(expected, abs=1e-5)
    # invariant to a constant added to every logit of a frame / a context
    lm2 = lm + torch.randn(1, 4, 1)
    am2 = am + torch.randn(1, 4, 1)
    assert R.rnnt_loss_simple(lm2, am2, symbols, **kw).item() == pytest.approx(expected, abs=1e-4)
    full = am2.unsqueeze(2) + lm2.unsqueeze(1)
    assert R.rnnt_loss(full, symbols, **kw).item() == pytest.approx(expected, abs=1e-4)


# --------------------------------------------------------------------------
# The recursion itself
# --------------------------------------------------------------------------
@pytest.mark.parametrize("modified", [False, True])
def test_recursion_matches_naive_with_boundaries(modified):
    B, S, T = 4, 4, 6
    g = torch.Generator().manual_seed(1)
    px = torch.randn(B, S, T if modified else T + 1, generator=g, dtype=torch.float64, requires_grad=True)
    py = torch.randn(B, S + 1, T, generator=g, dtype=torch.float64, requires_grad=True)
    # includes non-zero begins and an empty symbol sequence
    boundary = torch.tensor([[0, 0, S, T], [1, 2, 3, 5], [0, 1, 2, 4], [2, 0, 2, 3]])
    got, (gx, gy) = R.mutual_information_recursion(px, py, boundary, return_grad=True)
    ref = naive_recursion(px, py, boundary)
    torch.testing.assert_close(got, ref)
    ref_gx, ref_gy = torch.autograd.grad(ref.sum(), [px, py])
    torch.testing.assert_close(gx, ref_gx.nan_to_num(0.0))  # naive: NaN on dead cells
    torch.testing.assert_close(gy, ref_gy.nan_to_num(0.0))
    w = torch.randn(B, dtype=torch.float64, generator=g)
    got_gx, got_gy = torch.autograd.grad((got * w).sum(), [px, py])
    torch.testing.assert_close(got_gx, gx * w.view(B, 1, 1))
    torch.testing.assert_close(got_gy, gy * w.view(B, 1, 1))


@pytest.mark.parametrize("modified", [False, True])
def test_recursion_gradcheck(modified):
    B, S, T = 3, 3, 5
    px = torch.randn(B, S, T if modified else T + 1, dtype=torch.float64, requires_grad=True)
    py = torch.randn(B, S + 1, T, dtype=torch.float64, requires_grad=True)
    boundary = torch.tensor([[0, 0, S, T], [1, 1, 3, 4], [0, 0, 1, 2]])
    assert torch.autograd.gradcheck(lambda a, b: R.mutual_information_recursion(a, b, boundary), (px, py))


@pytest.mark.parametrize("rnnt_type", ["regular", "modified"])
def test_float32_occupations_are_conserved(rnnt_type):
    """Every path consumes each frame once and emits each symbol once, so the occupations of
    the arcs of a frame (and of a symbol) sum to 1. In float32 at T=400, S=80 they stay within
    2e-6 of 1, as k2's do (two separately rounded arc weights per cell drifted by ~8e-4)."""
    B, S, T, C = 2, 80, 400, 50
    g = torch.Generator().manual_seed(0)
    lm, am = torch.randn(B, S + 1, C, generator=g), torch.randn(B, T, C, generator=g)
    symbols = torch.randint(1, C, (B, S), generator=g)
    px, py = R.get_rnnt_logprobs(lm, am, symbols, termination_symbol=0, rnnt_type=rnnt_type)
    _, (gx, gy) = R.mutual_information_recursion(px, py, return_grad=True)
    per_symbol = gx.sum(2)
    per_frame = gy.sum(1) + (gx.sum(1) if rnnt_type == "modified" else 0)
    assert (per_symbol - 1).abs().max() < 2e-6
    assert (per_frame - 1).abs().max() < 2e-6


def test_no_path_gives_inf_loss_and_zero_grad():
    px = torch.randn(1, 2, 4, requires_grad=True)  # regular, T = 3
    py = torch.randn(1, 3, 3, requires_grad=True)
    boundary = torch.tensor([[0, 0, 2, 0]])  # 2 symbols, no frame: impossible
    px_fixed = R._finish_px(px[:, :, :3], py, "regular", boundary)
    scores = R.mutual_information_recursion(px_fixed, py, boundary)
    assert scores.item() == NEG_INF
    scores.sum().backward()
    assert torch.all(px.grad == 0) and torch.all(py.grad == 0)


# --------------------------------------------------------------------------
# Losses against the naive transducer
# --------------------------------------------------------------------------
@pytest.mark.parametrize("rnnt_type", RNNT_TYPES)
@pytest.mark.parametrize("delay_penalty", [0.0, 0.3])
def test_full_loss_matches_naive(rnnt_type, delay_penalty):
    logits, symbols, lengths, boundary = random_case(seed=2)
    logits.requires_grad_(True)
    got = R.rnnt_loss(logits, symbols, 0, boundary=boundary, rnnt_type=rnnt_type,
                      delay_penalty=delay_penalty, reduction="none")
    ref = naive_transducer_loss(logits, symbols, lengths, 0, rnnt_type, delay_penalty)
    torch.testing.assert_close(got, ref)
    g_got, = torch.autograd.grad(got.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(g_got, g_ref.nan_to_num(0.0))
    # reductions
    plain = R.rnnt_loss(logits, symbols, 0, boundary=boundary, rnnt_type=rnnt_type,
                        delay_penalty=delay_penalty, reduction="sum")
    assert plain.item() == pytest.approx(ref.sum().item())


def test_delay_penalty_formula():
    """d loss / d delay_penalty = -E[sum over emitted symbols of ((T-1)/2 - t)],
    measured on the naive DP with autograd, compared to a finite difference."""
    logits, symbols, lengths, boundary = random_case(B=1, seed=3)
    dp = torch.tensor(0.2, dtype=torch.float64)
    f = lambda d: R.rnnt_loss(logits, symbols, 0, boundary=boundary, delay_penalty=float(d), reduction="sum")
    dp_var = dp.clone().requires_grad_(True)
    ref = naive_transducer_loss(logits, symbols, lengths, 0, "regular", dp_var).sum()
    slope, = torch.autograd.grad(ref, dp_var)
    eps = 1e-5
    numeric = (f(dp + eps) - f(dp - eps)) / (2 * eps)
    assert numeric.item() == pytest.approx(slope.item(), rel=1e-5, abs=1e-7)
    assert f(dp).item() != pytest.approx(f(0.0).item())


def test_negative_delay_penalty_is_ignored_as_in_k2():
    logits, symbols, lengths, boundary = random_case(B=2, seed=4)
    f = lambda d: R.rnnt_loss(logits, symbols, 0, boundary=boundary, delay_penalty=d, reduction="none")
    assert torch.equal(f(-0.5), f(0.0))
    lm, am = logits.mean(1), logits.mean(2)
    g = lambda d: R.rnnt_loss_simple(lm, am, symbols, 0, boundary, delay_penalty=d, reduction="none")
    assert torch.equal(g(-0.5), g(0.0))
    assert not torch.equal(g(0.5), g(0.0))


@pytest.mark.parametrize("rnnt_type", ["regular", "modified"])
def test_hat_logprobs_match_the_definition(rnnt_type):
    """HAT: p(blank) = sigmoid(b), p(y) = (1 - sigmoid(b)) * softmax over non-blank logits,
    checked cell by cell against a direct computation, with no pruning (R = S + 1)."""
    B, S, T, C, blank = 2, 3, 5, 6, 2
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(B, T, S + 1, C, generator=g, dtype=torch.float64)
    symbols = torch.tensor([[0, 3, 5], [1, 1, 4]])
    ranges = torch.arange(S + 1).expand(B, T, S + 1).contiguous()
    px, py = R.get_hat_logprobs_pruned(logits, symbols, ranges, blank, rnnt_type=rnnt_type)
    for b in range(B):
        for t in range(T):
            for s in range(S + 1):
                z = logits[b, t, s]
                p_blank = torch.sigmoid(z[blank])
                others = [c for c in range(C) if c != blank]
                p_sym = (1 - p_blank) * torch.softmax(z[others], 0)
                assert py[b, s, t].item() == pytest.approx(p_blank.log().item(), abs=1e-12)
                if s < S:
                    y = symbols[b, s].item()
                    want = p_sym[others.index(y)].log().item()
                    assert px[b, s, t].item() == pytest.approx(want, abs=1e-12)
    # The loss uses them: rnnt_loss_pruned(use_hat_loss=True) is the recursion over these.
    loss = R.rnnt_loss_pruned(logits, symbols, ranges, blank, rnnt_type=rnnt_type,
                              reduction="none", use_hat_loss=True)
    torch.testing.assert_close(loss, -R.mutual_information_recursion(px, py))
    plain = R.rnnt_loss_pruned(logits, symbols, ranges, blank, rnnt_type=rnnt_type, reduction="none")
    assert not torch.allclose(loss, plain)


@pytest.mark.parametrize("rnnt_type", RNNT_TYPES)
def test_simple_equals_full_on_sum_of_logits(rnnt_type):
    B, S, T, C = 3, 4, 7, 6
    lm = torch.randn(B, S + 1, C, dtype=torch.float64, requires_grad=True)
    am = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    symbols = torch.randint(1, C, (B, S))
    boundary = torch.tensor([[0, 0, 4, 7], [0, 0, 3, 5], [0, 0, 1, 4]])
    kw = dict(termination_symbol=0, boundary=boundary, rnnt_type=rnnt_type, reduction="none")
    simple = R.rnnt_loss_simple(lm, am, symbols, **kw)
    full = R.rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, **kw)
    torch.testing.assert_close(simple, full)
    g1 = torch.autograd.grad(simple.sum(), [lm, am])
    g2 = torch.autograd.grad(full.sum(), [lm, am])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    # per-frame / per-context constants do not change anything
    shifted = R.rnnt_loss_simple(lm + torch.randn(B, S + 1, 1), am + torch.randn(B, T, 1), symbols, **kw)
    torch.testing.assert_close(shifted, simple)


def test_simple_loss_gradcheck():
    B, S, T, C = 2, 3, 5, 4
    lm = torch.randn(B, S + 1, C, dtype=torch.float64, requires_grad=True)
    am = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    symbols = torch.randint(1, C, (B, S))
    boundary = torch.tensor([[0, 0, 3, 5], [0, 0, 2, 3]])
    for rnnt_type in RNNT_TYPES:
        f = lambda l, a: R.rnnt_loss_simple(l, a, symbols, 0, boundary, rnnt_type, 0.1, "none")
        assert torch.autograd.gradcheck(f, (lm, am))


def test_smoothed_extremes_are_lm_only_and_am_only():
    B, S, T, C = 2, 3, 6, 5
    lm = torch.randn(B, S + 1, C, dtype=torch.float64)
    am = torch.randn(B, T, C, dtype=torch.float64)
    symbols = torch.randint(1, C, (B, S))
    kw = dict(termination_symbol=0, reduction="none")
    # all weight on the decoder: the same as a joiner that ignores the frame
    lm_only = R.rnnt_loss_smoothed(lm, am, symbols, lm_only_scale=1.0, am_only_scale=0.0, **kw)
    ref = R.rnnt_loss(lm.unsqueeze(1).expand(B, T, S + 1, C), symbols, **kw)
    torch.testing.assert_close(lm_only, ref)
    # all weight on the encoder with the unigram of softmax(lm) as LM
    unigram = lm.softmax(-1).mean(dim=(0, 1))
    am_only = R.rnnt_loss_smoothed(lm, am, symbols, lm_only_scale=0.0, am_only_scale=1.0, **kw)
    ref = R.rnnt_loss((am + unigram.log()).unsqueeze(2).expand(B, T, S + 1, C), symbols, **kw)
    torch.testing.assert_close(am_only, ref)


# --------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------
def _pruned_setup(rnnt_type, S=6, T=12, seed=4):
    g = torch.Generator().manual_seed(seed)
    B, C, D = 3, 7, 8
    enc = torch.randn(B, T, D, generator=g)
    dec = torch.randn(B, S + 1, D, generator=g)
    w = torch.randn(D, C, generator=g)
    joiner = lambda e, d: torch.tanh(e + d) @ w
    symbols = torch.randint(1, C, (B, S), generator=g)
    boundary = torch.tensor([[0, 0, S, T], [0, 0, S - 2, T - 3], [0, 0, 2, S]])
    # simple loss from (separate) projections
    lm, am = dec @ w, enc @ w
    _, (px_grad, py_grad) = R.rnnt_loss_simple(lm, am, symbols, 0, boundary, rnnt_type,
                                               reduction="none", return_grad=True)
    full = R.rnnt_loss(joiner(enc.unsqueeze(2), dec.unsqueeze(1)), symbols, 0, boundary,
                       rnnt_type, reduction="none")
    return enc, dec, joiner, symbols, boundary, px_grad, py_grad, full


@pytest.mark.parametrize("rnnt_type", RNNT_TYPES)
def test_pruned_loss_bounds_full_loss(rnnt_type):
    S = 6
    enc, dec, joiner, symbols, boundary, px_grad, py_grad, full = _pruned_setup(rnnt_type, S=S)
    for s_range in [1, 2, 3, S + 1, S + 3]:
        if s_range < 2 and rnnt_type != "modified":
            continue  # regular and constrained need positions s and s+1 on a frame
        ranges = R.get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
        am_p, lm_p = R.do_rnnt_pruning(enc, dec, ranges)
        # the pruned joiner input is the full one at the kept positions
        assert torch.equal(lm_p, dec[torch.arange(3).view(3, 1, 1), ranges])
        pruned = R.rnnt_loss_pruned(joiner(am_p, lm_p), symbols, ranges, 0, boundary,
                                    rnnt_type, reduction="none")
        if s_range >= S + 1:
            torch.testing.assert_close(pruned, full)
        else:
            assert torch.all(pruned >= full - 1e-4), (s_range, pruned, full)
            assert torch.all(torch.isfinite(pruned)), (s_range, pruned)  # a path survives


@pytest.mark.parametrize("rnnt_type", ["regular", "modified"])
def test_prune_ranges_are_valid_windows(rnnt_type):
    S = 6
    _, _, _, _, boundary, px_grad, py_grad, _ = _pruned_setup(rnnt_type, S=S, seed=5)
    s_range = 3
    ranges = R.get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    begin = ranges[:, :, 0]
    assert torch.equal(ranges - begin.unsqueeze(2), torch.arange(s_range).expand_as(ranges))
    assert torch.all(begin[:, 0] == 0)
    step = begin[:, 1:] - begin[:, :-1]
    assert torch.all(step >= 0)
    assert torch.all(step <= (s_range - 1 if rnnt_type == "regular" else 1))
    assert torch.all(ranges <= S)
    for b, (_, _, s_len, t_len) in enumerate(boundary.tolist()):
        assert ranges[b, t_len - 1, -1] >= s_len or ranges[b, t_len - 1, 0] == 0


def test_prune_ranges_follow_a_sharp_alignment():
    """With one dominant path, the window of every frame must contain it."""
    S, T, C = 4, 12, 6
    symbols = torch.tensor([[1, 2, 3, 4]])
    emit_at = [2, 5, 6, 9]  # frame of each symbol
    am = torch.full((1, T, C), -10.0)
    am[0, :, 0] = 10.0
    for s, t in enumerate(emit_at):
        am[0, t, symbols[0, s]] = 20.0  # a symbol beats blank on its frame
    lm = torch.zeros(1, S + 1, C)
    boundary = torch.tensor([[0, 0, S, T]])
    _, (px_grad, py_grad) = R.rnnt_loss_simple(lm, am, symbols, 0, boundary, return_grad=True)
    ranges = R.get_rnnt_prune_ranges(px_grad, py_grad, boundary, 2)
    position = 0
    for t in range(T):
        assert position in ranges[0, t].tolist(), (t, ranges[0])
        position += emit_at.count(t)
        assert position in ranges[0, t].tolist(), (t, ranges[0])


# --------------------------------------------------------------------------
# The k2 switch
# --------------------------------------------------------------------------
def test_backend_switch(monkeypatch):
    assert R.rnnt_backend(False) is R
    monkeypatch.setenv("ICEFALL_USE_K2", "0")
    assert R.rnnt_backend() is R
    if not R.k2_available():
        monkeypatch.setenv("ICEFALL_USE_K2", "1")
        assert R.rnnt_backend() is R  # falls back when k2 is absent
        with pytest.raises(ImportError):
            R.rnnt_backend(True)


@pytest.mark.skipif(not R.k2_available(), reason="k2 is not installed")
@pytest.mark.parametrize("rnnt_type", RNNT_TYPES)
def test_same_as_k2(rnnt_type):
    import k2

    B, S, T, C = 4, 8, 30, 12
    lm = torch.randn(B, S + 1, C)
    am = torch.randn(B, T, C)
    symbols = torch.randint(1, C, (B, S))
    boundary = torch.tensor([[0, 0, 8, 30], [0, 0, 5, 20], [0, 0, 7, 25], [0, 0, 1, 9]])
    for mod in (R, k2):
        kw = dict(termination_symbol=0, boundary=boundary, rnnt_type=rnnt_type, reduction="none")
        loss, (gx, gy) = mod.rnnt_loss_smoothed(lm, am, symbols, lm_only_scale=0.25,
                                                am_only_scale=0.0, delay_penalty=0.1,
                                                return_grad=True, **kw)
        ranges = mod.get_rnnt_prune_ranges(gx, gy, boundary, 3)
        am_p, lm_p = mod.do_rnnt_pruning(am, lm, ranges)
        pruned = mod.rnnt_loss_pruned(am_p + lm_p, symbols, ranges, **kw)
        full = mod.rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, **kw)
        if mod is R:
            ours = (loss, gx, gy, ranges, pruned, full)
    for a, b in zip(ours, (loss, gx, gy, ranges, pruned, full)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("rnnt_type", RNNT_TYPES)
def test_cuda_matches_cpu(rnnt_type):
    enc, dec, joiner, symbols, boundary, px_grad, py_grad, full = _pruned_setup(rnnt_type)
    lm, am = dec.cuda() @ torch.ones(8, 7, device="cuda"), enc.cuda() @ torch.ones(8, 7, device="cuda")
    cpu = R.rnnt_loss_simple(lm.cpu(), am.cpu(), symbols, 0, boundary, rnnt_type, 0.1, "none", True)
    gpu = R.rnnt_loss_simple(lm, am, symbols.cuda(), 0, boundary.cuda(), rnnt_type, 0.1, "none", True)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0])
    torch.testing.assert_close(gpu[1][0].cpu(), cpu[1][0])
    ranges = R.get_rnnt_prune_ranges(px_grad.cuda(), py_grad.cuda(), boundary.cuda(), 3)
    torch.testing.assert_close(ranges.cpu(), R.get_rnnt_prune_ranges(px_grad, py_grad, boundary, 3))
