"""Span masks: statistics against closed-form expectations, padding, reproducibility."""
import math

import pytest
import torch

from icefall.nn.masking import (
    compute_channel_mask,
    compute_mask,
    sample_span_starts,
    spans_from_starts,
)


def pad_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T)[None, :] >= lengths[:, None]


def span_count_distribution(n: int, p: float, L: int, min_masks: int):
    """{k: P(k)} for k = min(max(min_masks, floor(p*n/L + U)), #start positions)."""
    a = p * n / L
    k0, frac = math.floor(a), a - math.floor(a)
    num_starts = n - min(L, n) + 1
    dist = {}
    for k, prob in ((k0, 1 - frac), (k0 + 1, frac)):
        k = min(max(min_masks, k), num_starts)
        dist[k] = dist.get(k, 0.0) + prob
    return dist


def expected_masked_fraction(n: int, p: float, L: int, min_masks: int) -> float:
    """E[masked frames / n] for k distinct uniform starts among m = n - L + 1 positions.

    Frame t is covered by the w_t starts in [t - L + 1, t]; it stays unmasked iff none of the
    k starts (drawn without replacement) falls there: C(m - w_t, k) / C(m, k).
    """
    m = n - L + 1
    total = 0.0
    for k, pk in span_count_distribution(n, p, L, min_masks).items():
        for t in range(n):
            w = min(t, m - 1) - max(0, t - L + 1) + 1
            total += pk * (1 - math.comb(m - w, k) / math.comb(m, k))
    return total / n


@pytest.mark.parametrize("mask_prob,min_masks", [(0.65, 2), (0.8, 2), (0.02, 3)])
def test_fraction_and_span_count_match_theory(mask_prob, min_masks):
    L, T = 10, 120
    lengths = torch.tensor([120, 87, 33])
    reps = 3000
    lens = lengths.repeat(reps)
    g = torch.Generator().manual_seed(1)
    starts = sample_span_starts((lens.numel(), T), lens, mask_prob, L, min_masks, g)
    mask = spans_from_starts(starts, lens, L)
    for i, n in enumerate(lengths.tolist()):
        rows = slice(i, None, len(lengths))
        dist = span_count_distribution(n, mask_prob, L, min_masks)
        exp_k = sum(k * pk for k, pk in dist.items())
        mean_k = starts[rows].sum(1).double().mean().item()
        assert abs(mean_k - exp_k) < 0.03 + 0.01 * exp_k, (n, mean_k, exp_k)
        # Every sampled count is one of the two allowed values.
        assert set(starts[rows].sum(1).tolist()) <= set(dist)
        frac = mask[rows].sum(1).double().mean().item() / n
        exp_frac = expected_masked_fraction(n, mask_prob, L, min_masks)
        assert abs(frac - exp_frac) < 0.006, (n, frac, exp_frac)
        # Overlaps make the fraction smaller than the naive k * L / n.
        assert frac <= exp_k * L / n + 1e-9


def test_starts_are_uniform_over_valid_positions():
    T, L, n = 40, 10, 40
    lens = torch.full((20000,), n)
    g = torch.Generator().manual_seed(2)
    starts = sample_span_starts((lens.numel(), T), lens, 0.5, L, 2, g)
    per_pos = starts.double().mean(0)
    m = n - L + 1
    assert per_pos[m:].sum() == 0  # spans never run past the end
    k = sum(k * pk for k, pk in span_count_distribution(n, 0.5, L, 2).items())
    # Each valid position is a start with probability E[k] / m.
    torch.testing.assert_close(per_pos[:m], torch.full((m,), k / m, dtype=torch.double), atol=0.012, rtol=0)


def test_masks_never_touch_padding_and_spans_match_naive():
    T, L = 50, 7
    lengths = torch.tensor([50, 49, 20, 7, 5, 1, 0])
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        starts = sample_span_starts((len(lengths), T), lengths, 0.9, L, 2, g)
        mask = spans_from_starts(starts, lengths, L)
        assert not (mask & pad_mask(lengths, T)).any()
        # Naive reference: mark min(L, n) frames after every start.
        ref = torch.zeros_like(mask)
        for b, n in enumerate(lengths.tolist()):
            for s in starts[b].nonzero().flatten().tolist():
                assert s + min(L, n) <= n
                ref[b, s : s + min(L, n)] = True
        assert torch.equal(mask, ref)
    # Utterances shorter than a span are masked entirely, empty ones not at all.
    assert mask[4, :5].all() and mask[5, :1].all() and not mask[6].any()


def test_compute_mask_reproducible_with_generator():
    lengths = torch.tensor([100, 60])
    m1 = compute_mask((2, 100), lengths, 0.65, 10, generator=torch.Generator().manual_seed(7))
    m2 = compute_mask((2, 100), lengths, 0.65, 10, generator=torch.Generator().manual_seed(7))
    m3 = compute_mask((2, 100), lengths, 0.65, 10, generator=torch.Generator().manual_seed(8))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    with pytest.raises(NotImplementedError):
        compute_mask((2, 100), lengths, 0.65, 10, allow_overlap=False)


def test_channel_mask_min_masks_zero():
    g = torch.Generator().manual_seed(4)
    m = compute_channel_mask(5000, 64, 0.0, 8, generator=g)
    assert not m.any()
    m = compute_channel_mask(5000, 64, 0.25, 8, generator=g)
    exp = expected_masked_fraction(64, 0.25, 8, 0)
    assert abs(m.double().mean().item() - exp) < 0.01
