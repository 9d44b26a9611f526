"""MAP@R: hand-computed cases and a naive reference."""
import numpy as np
import pytest
import torch

from icefall.eval.mapr import map_at_r, word_embeddings, word_map_at_r


def naive_map_at_r(emb: np.ndarray, labels):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    scores = []
    for q in range(len(labels)):
        R = sum(1 for j, l in enumerate(labels) if l == labels[q] and j != q)
        if R == 0:
            continue
        others = sorted((j for j in range(len(labels)) if j != q), key=lambda j: -float(e[q] @ e[j]))
        hits, ap = 0, 0.0
        for i, j in enumerate(others[:R], start=1):
            if labels[j] == labels[q]:
                hits += 1
                ap += hits / i
        scores.append(ap / R)
    return float(np.mean(scores))


def test_perfect_retrieval_is_one():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16)) * 5
    labels = [f"w{i % 5}" for i in range(40)]
    emb = centres[[i % 5 for i in range(40)]] + 0.01 * rng.standard_normal((40, 16))
    assert map_at_r(torch.from_numpy(emb), labels) == pytest.approx(1.0)


def test_hand_constructed_imperfect_case():
    # Angles (degrees) on the unit circle: A at 0, 10, 40; B at 22, 90; C (a singleton) at 180.
    deg = np.array([0, 10, 40, 22, 90, 180])
    emb = torch.tensor(np.stack([np.cos(np.radians(deg)), np.sin(np.radians(deg))], 1))
    labels = ["A", "A", "A", "B", "B", "C"]
    # A@0:  R=2, ranking 10(A) 22(B)          -> (1/1) / 2           = 1/2
    # A@10: R=2, ranking 0(A) 22(B)           -> (1/1) / 2           = 1/2
    # A@40: R=2, ranking 22(B) 10(A)          -> (1/2) / 2           = 1/4
    # B@22: R=1, ranking 10(A)                -> 0
    # B@90: R=1, ranking 40(A)                -> 0
    # C is a singleton: no query.
    expected = (1 / 2 + 1 / 2 + 1 / 4 + 0 + 0) / 5
    assert map_at_r(emb, labels) == pytest.approx(expected)
    assert map_at_r(emb, labels, chunk_size=2) == pytest.approx(expected)


def test_matches_naive_reference():
    rng = np.random.default_rng(1)
    labels = [f"w{rng.integers(0, 12)}" for _ in range(150)]
    centres = {l: rng.standard_normal(8) for l in sorted(set(labels))}
    emb = np.stack([centres[l] + 0.8 * rng.standard_normal(8) for l in labels])
    ref = naive_map_at_r(emb, labels)
    assert 0.2 < ref < 0.9
    assert map_at_r(torch.from_numpy(emb), labels, chunk_size=32) == pytest.approx(ref)


def test_word_map_at_r_from_alignments():
    # Two words with distinct frame vectors, silence ignored; frames at 100 Hz.
    T = 60
    x = torch.zeros(T, 2)
    x[:, 0] = 1.0
    x[20:40] = torch.tensor([0.0, 1.0])
    feats = {"u1": x, "u2": x.clone()}
    ali = {u: [(0.0, 0.2, "yes"), (0.2, 0.4, "no"), (0.4, 0.6, "sil")] for u in feats}
    emb, words = word_embeddings(feats, ali, 100)
    assert words == ["yes", "no", "yes", "no"]
    torch.testing.assert_close(emb[1], torch.tensor([0.0, 1.0]))
    assert word_map_at_r(feats, ali, 100) == pytest.approx(1.0)
