"""PNMI and purities: limiting cases, a closed-form case and a naive reference."""
import math
from collections import Counter

import numpy as np
import pytest

from icefall.eval.pnmi import frame_phone_labels, pnmi_from_alignments, unit_quality


def naive_quality(phones, units):
    n = len(phones)
    pyz = Counter(zip(phones, units))
    py, pz = Counter(phones), Counter(units)
    mi = sum(c / n * math.log((c / n) / (py[y] / n * pz[z] / n)) for (y, z), c in pyz.items())
    hy = -sum(c / n * math.log(c / n) for c in py.values())
    phone_purity = sum(max(pyz[(y, z)] for y in py) for z in pz) / n
    cluster_purity = sum(max(pyz[(y, z)] for z in pz) for y in py) / n
    return phone_purity, cluster_purity, mi / hy


def test_bijection_and_refinement():
    rng = np.random.default_rng(0)
    phones = rng.integers(0, 10, 5000)
    perm = rng.permutation(50)[:10]
    q = unit_quality(phones, perm[phones])
    assert q["pnmi"] == pytest.approx(1.0)
    assert q["phone_purity"] == pytest.approx(1.0) and q["cluster_purity"] == pytest.approx(1.0)
    # Three units per phone: every unit is still pure (PNMI 1), phones are split in ~thirds.
    units = phones * 3 + rng.integers(0, 3, phones.size)
    q = unit_quality(phones, units)
    assert q["pnmi"] == pytest.approx(1.0) and q["phone_purity"] == pytest.approx(1.0)
    assert abs(q["cluster_purity"] - 1 / 3) < 0.03


def test_independent_labels_near_zero():
    rng = np.random.default_rng(1)
    q = unit_quality(rng.integers(0, 10, 200_000), rng.integers(0, 20, 200_000))
    assert 0 <= q["pnmi"] < 0.003
    assert abs(q["phone_purity"] - 0.1) < 0.02  # best phone per unit is barely above chance


def test_closed_form_binary_channel():
    # Uniform binary phone, unit = phone flipped with probability 0.2:
    # I = ln 2 - H_b(0.2), H(y) = ln 2; both purities = 0.8.
    phones = np.array([0] * 50 + [1] * 50)
    units = np.array([0] * 40 + [1] * 10 + [1] * 40 + [0] * 10)
    q = unit_quality(phones, units)
    hb = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert q["pnmi"] == pytest.approx((math.log(2) - hb) / math.log(2))
    assert q["phone_purity"] == pytest.approx(0.8) and q["cluster_purity"] == pytest.approx(0.8)


def test_matches_naive_and_ignores_negative():
    rng = np.random.default_rng(2)
    phones = rng.integers(0, 6, 3000)
    units = np.where(rng.random(3000) < 0.6, phones * 2, rng.integers(0, 15, 3000))
    ref = naive_quality(phones.tolist(), units.tolist())
    q = unit_quality(np.concatenate([phones, [-1, 3]]), np.concatenate([units, [4, -1]]))
    assert (q["phone_purity"], q["cluster_purity"], q["pnmi"]) == pytest.approx(ref)
    assert q["frames"] == 3000


def test_from_alignments():
    ali = {
        "u1": [(0.0, 0.05, "sil"), (0.05, 0.12, "a"), (0.12, 0.2, "b")],
        "u2": [(0.0, 0.1, "b"), (0.1, 0.15, "c")],
    }
    ids = {"a": 0, "b": 1, "c": 2}
    y1 = frame_phone_labels(ali["u1"], 21, 100, ids)
    # frame i is labelled by the segment holding (i + 0.5) / 100; sil is unlabelled (-1)
    assert y1.tolist() == [-1] * 5 + [0] * 7 + [1] * 8 + [-1]
    units = {"u1": np.array([7] * 5 + [3] * 7 + [5] * 8 + [3]), "u2": np.array([5] * 10 + [9] * 5)}
    q = pnmi_from_alignments(units, ali, 100)
    assert q["frames"] == 15 + 15 and q["pnmi"] == pytest.approx(1.0)
    units["u2"][0] = 3  # one frame of "b" now shares unit 3 with "a"
    q = pnmi_from_alignments(units, ali, 100)
    assert q["pnmi"] < 1.0 and q["phone_purity"] == pytest.approx(29 / 30)
