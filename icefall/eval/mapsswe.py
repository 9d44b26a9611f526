"""Matched-pairs sentence-segment word error (MAPSSWE) significance test.

Gillick and Cox (1989), as in NIST sc_stats: align both systems' outputs to
the reference, cut the reference at words that *both* systems recognised
correctly (those words separate segments whose errors are roughly
independent), count each system's errors per segment, and test whether the
mean per-segment difference is zero with a normal approximation (two-sided).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from icefall.eval.wer import EPS, Result, align


def _errors_per_ref_position(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[List[int], List[bool]]:
    """For ref positions 0..n (n = a virtual end position): errors charged to
    it (its substitution/deletion plus insertions just before it), and whether
    it was recognised correctly with nothing inserted before it."""
    n = len(ref)
    errors = [0] * (n + 1)
    correct = [False] * (n + 1)
    pos = 0
    for r, h in align(ref, hyp):
        if r == EPS:
            errors[pos] += 1  # insertion, charged to the next ref word
        else:
            if h == r and errors[pos] == 0:
                correct[pos] = True
            elif h != r:
                errors[pos] += 1
            pos += 1
    return errors, correct


def segment_errors(ref: Sequence[str], hyp_a: Sequence[str], hyp_b: Sequence[str]) -> List[Tuple[int, int]]:
    """(errors of A, errors of B) for each segment of one utterance.

    Segments are the maximal runs of reference positions that are not
    recognised correctly by both systems; runs without errors are dropped.
    """
    err_a, ok_a = _errors_per_ref_position(ref, hyp_a)
    err_b, ok_b = _errors_per_ref_position(ref, hyp_b)
    segments, cur = [], [0, 0]
    for i in range(len(ref) + 1):
        if ok_a[i] and ok_b[i]:
            if cur != [0, 0]:
                segments.append(tuple(cur))
            cur = [0, 0]
        else:
            cur[0] += err_a[i]
            cur[1] += err_b[i]
    if cur != [0, 0]:
        segments.append(tuple(cur))
    return segments


@dataclass
class MapssweResult:
    num_segments: int
    errors_a: int
    errors_b: int
    mean_diff: float  # mean of (errors A - errors B) per segment
    z: float  # the test statistic W
    p_value: float  # two-sided


def mapsswe(results_a: Sequence[Result], results_b: Sequence[Result]) -> MapssweResult:
    """MAPSSWE test between two systems on the same test set.

    Args:
      results_a, results_b: (cut_id, ref words, hyp words) for the same cuts
        (matched by cut_id; the references must agree).
    Returns: :class:`MapssweResult`; p = 1 when the systems never differ.
    """
    hyps_b = {cut: (ref, hyp) for cut, ref, hyp in results_b}
    assert len(hyps_b) == len(results_a), "both systems must decode the same cuts"
    diffs, tot_a, tot_b = [], 0, 0
    for cut, ref, hyp_a in results_a:
        ref_b, hyp_b = hyps_b[cut]
        assert list(ref) == list(ref_b), f"references differ for {cut}"
        for n_a, n_b in segment_errors(ref, hyp_a, hyp_b):
            diffs.append(n_a - n_b)
            tot_a += n_a
            tot_b += n_b
    n = len(diffs)
    mean = sum(diffs) / n if n else 0.0
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    if var == 0.0:  # all segments differ by the same amount (or none exist)
        z = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        z = mean / math.sqrt(var / n)
    p = math.erfc(abs(z) / math.sqrt(2.0))  # 2 * (1 - Phi(|z|))
    return MapssweResult(n, tot_a, tot_b, mean, z, p)
