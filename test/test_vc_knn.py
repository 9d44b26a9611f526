"""kNN-VC matching: equal to brute force, interpolation ends, prematching excludes own utterance."""
import pytest
import torch

from icefall.vc.knn import interpolate, knn_indices, knn_match, prematch


def brute_force_match(source, target, k):
    out = []
    for s in source:  # one frame at a time, the plain definition
        sims = torch.stack([torch.dot(s, t) / (s.norm() * t.norm()) for t in target])
        out.append(target[sims.argsort(descending=True)[:k]].mean(0))
    return torch.stack(out)


@pytest.mark.parametrize("k,chunk", [(1, 2048), (4, 2048), (4, 7), (9, 5)])
def test_knn_match_equals_brute_force(k, chunk):
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(23, 6, generator=g), torch.randn(41, 6, generator=g) * 3
    got = knn_match(source, target, k=k, chunk_size=chunk)
    assert got.shape == source.shape
    torch.testing.assert_close(got, brute_force_match(source, target, k), rtol=1e-5, atol=1e-6)


def test_knn_uses_cosine_not_euclidean():
    target = torch.tensor([[10.0, 0.0], [0.6, 0.8]])
    # nearest by Euclidean distance would be [0.6, 0.8]; by angle it is [10, 0]
    assert knn_indices(torch.tensor([[1.0, 0.1]]), target, 1).tolist() == [[0]]


def test_k_larger_than_target_is_an_error():
    with pytest.raises(ValueError, match="k=5"):
        knn_match(torch.randn(3, 4), torch.randn(4, 4), k=5)


def test_interpolation_ends_and_middle():
    g = torch.Generator().manual_seed(1)
    source, target = torch.randn(10, 5, generator=g), torch.randn(30, 5, generator=g)
    matched = knn_match(source, target, k=4)
    assert torch.equal(interpolate(source, matched, 0.0), source)
    assert torch.equal(interpolate(source, matched, 1.0), matched)
    torch.testing.assert_close(interpolate(source, matched, 0.25), 0.75 * source + 0.25 * matched)
    assert not torch.equal(matched, source)


def test_prematch_never_matches_own_utterance():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(5, 8, generator=g)
    # each utterance repeats its own frames: matching inside it would be exact (similarity 1)
    utts = [torch.cat([base + 0.01 * i, base + 0.01 * i]) + 0.001 * torch.randn(10, 8, generator=g) for i in range(4)]
    utts.append(torch.randn(6, 8, generator=g))
    speakers = ["a", "a", "b", "b", "a"]
    out = prematch(utts, speakers, k=2, chunk_size=4)
    assert [o.shape for o in out] == [u.shape for u in utts]
    for i, (u, spk) in enumerate(zip(utts, speakers)):
        others = torch.cat([v for j, (v, s) in enumerate(zip(utts, speakers)) if s == spk and j != i])
        torch.testing.assert_close(out[i], brute_force_match(u, others, 2), rtol=1e-5, atol=1e-6)
    # and directly: no retrieved frame index falls inside the query's own utterance
    frames = torch.cat(utts[:2])
    groups = torch.tensor([0] * 10 + [1] * 10)
    idx = knn_indices(frames, frames, 3, chunk_size=3, query_groups=groups, key_groups=groups)
    assert (groups[idx] != groups[:, None]).all()


def test_prematch_needs_two_utterances_per_speaker():
    with pytest.raises(ValueError, match="speaker 'x'"):
        prematch([torch.randn(4, 3), torch.randn(4, 3)], ["x", "y"])
