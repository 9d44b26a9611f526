"""Unit quality: ABX on one-hot units, PNMI and unit rates, with known answers."""
import random

import pytest
import torch

from icefall.slm.unit_quality import cut_units, one_hot, unit_quality, unit_rates

RATE = 50.0
PHONES = ["sil", "b", "a", "d", "e", "k"]
WORDS = ["b a d", "b e d", "d a b", "d e b", "k a d", "k e d"]


def toy_cuts(num_speakers=3, utts=5, seed=0):
    """Cuts with phone alignments (phones 2-5 frames) and per-frame phone ids in custom['phone_ids']."""
    from lhotse import MonoCut, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    rng = random.Random(seed)
    cuts = []
    for s in range(num_speakers):
        for u in range(utts):
            frames, ali = [], []
            for w in [rng.choice(WORDS) for _ in range(6)]:
                for p in ["sil"] + w.split():
                    n = rng.randint(2, 5)
                    ali.append(AlignmentItem(p, len(frames) / RATE, n / RATE))
                    frames += [PHONES.index(p)] * n
            ali.append(AlignmentItem("sil", len(frames) / RATE, 2 / RATE))
            frames += [0, 0]
            dur = len(frames) / RATE
            sup = SupervisionSegment(f"s{s}u{u}", f"s{s}u{u}", 0.0, dur, speaker=f"spk{s}",
                                     alignment={"phone": ali, "word": []})
            cut = MonoCut(f"s{s}u{u}", 0.0, dur, 0, supervisions=[sup],
                          custom={"units": " ".join(map(str, frames))})
            cuts.append(cut)
    return cuts


def test_perfect_units_score_perfectly_and_random_units_at_chance():
    cuts = toy_cuts()
    perfect = cut_units(cuts, "units")
    q = unit_quality(perfect, len(PHONES), RATE, cuts)
    assert q["abx_within"] == 0.0 and q["abx_across"] == 0.0
    assert q["pnmi"] == pytest.approx(1.0) and q["phone_purity"] == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    noise = {k: torch.randint(0, 20, v.shape, generator=g) for k, v in perfect.items()}
    q = unit_quality(noise, 20, RATE, cuts)
    assert 0.35 < q["abx_within"] < 0.65 and 0.35 < q["abx_across"] < 0.65, q
    assert q["pnmi"] < 0.15


def test_unit_rates_before_and_after_dedup():
    r = unit_rates({"a": [3, 3, 5, 5, 5, 3], "b": torch.tensor([1, 1, 1, 1])}, frame_rate=50.0)
    assert r["units_per_s"] == pytest.approx(50.0)
    assert r["dedup_units_per_s"] == pytest.approx(4 / 0.2)
    assert r["mean_run_frames"] == pytest.approx(10 / 4) and r["units_used"] == 3


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="must lie in"):
        one_hot({"u": [0, 7]}, 5)
    cut = toy_cuts(1, 1)[0]
    with pytest.raises(ValueError, match="no custom\\['kmeans'\\]"):
        cut_units([cut], "kmeans")
