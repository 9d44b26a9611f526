"""ABX: DTW and distances against naive loops, the full score against a brute-force triplet
enumeration, and the two limits (perfect features -> 0, random features -> 1/2)."""
import math
from collections import defaultdict

import numpy as np
import torch

from icefall.eval.abx import (
    Item,
    abx_score,
    angular_frame_distance,
    dtw_batch,
    items_from_alignments,
    kl_symmetric_frame_distance,
    read_item_file,
    pairwise_dtw,
    segment_frames,
    write_item_file,
)

RATE = 100


def naive_dtw(d: np.ndarray) -> float:
    """Textbook DTW with backtracking (tie order: diagonal, left, up), normalised by path length."""
    N, M = d.shape
    c = np.full((N, M), np.inf)
    for i in range(N):
        for j in range(M):
            if i == 0 and j == 0:
                c[i, j] = d[0, 0]
                continue
            prev = []
            if i > 0 and j > 0:
                prev.append(c[i - 1, j - 1])
            if j > 0:
                prev.append(c[i, j - 1])
            if i > 0:
                prev.append(c[i - 1, j])
            c[i, j] = d[i, j] + min(prev)
    i, j, steps = N - 1, M - 1, 1
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        elif c[i - 1, j - 1] <= c[i, j - 1] and c[i - 1, j - 1] <= c[i - 1, j]:
            i, j = i - 1, j - 1
        elif c[i, j - 1] <= c[i - 1, j]:
            j -= 1
        else:
            i -= 1
        steps += 1
    return c[N - 1, M - 1] / steps


def test_dtw_batch_matches_naive():
    g = torch.Generator().manual_seed(0)
    P, N, M = 40, 9, 7
    dist = torch.rand(P, N, M, generator=g, dtype=torch.float64)
    dist[::3] = dist[::3].round(decimals=1)  # create ties
    n = torch.randint(1, N + 1, (P,), generator=g)
    m = torch.randint(1, M + 1, (P,), generator=g)
    got = dtw_batch(dist, n, m)
    for p in range(P):
        ref = naive_dtw(dist[p, : n[p], : m[p]].numpy())
        assert abs(got[p].item() - ref) < 1e-12, p


def test_frame_distances_match_definitions():
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(2, 3, 5, generator=g, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(2, 4, 5, generator=g, dtype=torch.float64), dim=-1)
    ang = angular_frame_distance(x, y)
    for p in range(2):
        for i in range(3):
            for j in range(4):
                cos = float(x[p, i] @ y[p, j])
                assert abs(ang[p, i, j].item() - math.acos(cos) / math.pi) < 1e-9
    p = torch.softmax(torch.randn(2, 3, 6, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(torch.randn(2, 4, 6, generator=g, dtype=torch.float64), -1)
    kl = kl_symmetric_frame_distance(p, q, eps=0.0)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                pi, qj = p[b, i].numpy(), q[b, j].numpy()
                ref = 0.5 * (np.sum(pi * np.log(pi / qj)) + np.sum(qj * np.log(qj / pi)))
                assert abs(kl[b, i, j].item() - ref) < 1e-9
    assert torch.allclose(kl_symmetric_frame_distance(p, p, eps=0.0).diagonal(dim1=1, dim2=2), torch.zeros(2, 3, dtype=torch.float64))


def test_segment_frames_uses_frame_centres():
    for on, off in [(0.0, 0.05), (0.123, 0.2), (0.235, 0.305), (1.0, 1.0049), (0.5, 0.5)]:
        ref = [i for i in range(200) if on - 1e-9 <= (i + 0.5) / RATE <= off + 1e-9]
        s, e = segment_frames(on, off, RATE)
        assert list(range(s, e)) == ref, (on, off)


def test_items_and_item_file_round_trip(tmp_path):
    ali = {"u1": [(0.0, 0.1, "sil"), (0.1, 0.2, "a"), (0.2, 0.3, "b"), (0.3, 0.4, "c"), (0.4, 0.5, "sil")]}
    items = items_from_alignments(ali, {"u1": "spk1"})
    assert items == [Item("u1", 0.2, 0.3, "b", "a", "c", "spk1")]
    write_item_file(items, tmp_path / "x.item")
    assert read_item_file(tmp_path / "x.item") == items


def make_corpus(n_utts: int, n_speakers: int, phones: str, seed: int, signal: float, dim: int = 8):
    """Random phone strings with random durations; each frame = signal * phone vector +
    speaker offset + noise, labelled by the phone at the frame centre."""
    rng = np.random.default_rng(seed)
    phone_vec = {p: rng.standard_normal(dim) for p in phones}
    spk_vec = {s: 0.3 * rng.standard_normal(dim) for s in range(n_speakers)}
    feats, ali, spk = {}, {}, {}
    for u in range(n_utts):
        utt, s = f"utt{u}", u % n_speakers
        t, segs = 0.0, []
        for _ in range(12):
            d = round(float(rng.uniform(0.03, 0.09)), 3)
            segs.append((round(t, 3), round(t + d, 3), str(rng.choice(list(phones)))))
            t += d
        T = int(t * RATE)
        x = np.zeros((T, dim), dtype=np.float32)
        for i in range(T):
            c = (i + 0.5) / RATE
            ph = next((p for on, off, p in segs if on <= c < off), segs[-1][2])
            x[i] = signal * phone_vec[ph] + spk_vec[s] + rng.standard_normal(dim)
        feats[utt], ali[utt], spk[utt] = torch.from_numpy(x), segs, f"s{s}"
    return feats, ali, spk


def brute_force_abx(feats, items, mode):
    """Every triplet enumerated with loops, naive DTW, then Libri-Light's mean of means."""
    segs = []
    for it in items:
        s, e = segment_frames(it.onset, it.offset, RATE)
        x = torch.nn.functional.normalize(feats[it.file][s:e].double(), dim=-1).numpy()
        if len(x):
            segs.append((it, x))

    cache = {}

    def d(i, j):  # DTW(segment i as rows, segment j as columns), memoised
        if (i, j) not in cache:
            a, b = segs[i][1], segs[j][1]
            cache[(i, j)] = naive_dtw(np.arccos(np.clip(a @ b.T, -1, 1)) / np.pi)
        return cache[(i, j)]

    cell = defaultdict(list)
    for ia, (A, fa) in enumerate(segs):
        for ib, (B, fb) in enumerate(segs):
            if (B.prev, B.next, B.speaker) != (A.prev, A.next, A.speaker) or B.phone == A.phone:
                continue
            for ix, (X, fx) in enumerate(segs):
                if (X.prev, X.next, X.phone) != (A.prev, A.next, A.phone) or ix == ia:
                    continue
                if (mode == "within") != (X.speaker == A.speaker):
                    continue
                dax, dbx = d(ix, ia), d(ix, ib)
                err = 1.0 if dax > dbx else 0.5 if dax == dbx else 0.0
                key = (A.speaker, A.phone, B.phone, (A.prev, A.next), X.speaker)
                cell[key].append(err)
    per_sab = defaultdict(list)
    for (s, a, b, ctx, sx), errs in cell.items():
        per_sab[(s, a, b)].append(np.mean(errs))
    per_ab = defaultdict(list)
    for (s, a, b), v in per_sab.items():
        per_ab[(a, b)].append(np.mean(v))
    return float(np.mean([np.mean(v) for v in per_ab.values()]))


def test_abx_matches_brute_force():
    feats, ali, spk = make_corpus(24, 3, "abc", seed=0, signal=0.7)
    items = items_from_alignments(ali, spk)
    got = abx_score(feats, items, RATE, max_size_group=None, max_x_across=None)
    for mode in ("within", "across"):
        ref = brute_force_abx(feats, items, mode)
        assert 0.05 < ref < 0.45  # a non-trivial case
        assert abs(got[mode] - ref) < 1e-6, (mode, got[mode], ref)


def test_abx_limits():
    feats, ali, spk = make_corpus(60, 4, "abcd", seed=1, signal=20.0)
    items = items_from_alignments(ali, spk)
    perfect = abx_score(feats, items, RATE)
    assert perfect["within"] == 0.0 and perfect["across"] == 0.0
    assert perfect["n_items"] > 300

    feats, ali, spk = make_corpus(60, 4, "abcd", seed=1, signal=0.0)
    rand = abx_score(feats, items_from_alignments(ali, spk), RATE)
    assert abs(rand["within"] - 0.5) < 0.04 and abs(rand["across"] - 0.5) < 0.04, rand


def test_abx_kl_on_posteriors_and_subsampling_is_seeded():
    feats, ali, spk = make_corpus(40, 3, "abc", seed=2, signal=3.0)
    post = {u: torch.softmax(2 * x, dim=-1) for u, x in feats.items()}
    items = items_from_alignments(ali, spk)
    kl = abx_score(post, items, RATE, distance="kl_symmetric")
    rand = abx_score({u: torch.softmax(torch.randn_like(x), -1) for u, x in feats.items()}, items, RATE, distance="kl_symmetric")
    assert kl["within"] < 0.1 and kl["across"] < 0.1 and rand["within"] > 0.35
    a = abx_score(feats, items, RATE, max_size_group=2, max_x_across=1, seed=3)
    b = abx_score(feats, items, RATE, max_size_group=2, max_x_across=1, seed=3)
    assert a == b


def test_pairwise_dtw_computes_only_needed_pairs():
    g = torch.Generator().manual_seed(1)
    feats = [torch.nn.functional.normalize(torch.randn(int(n), 6, generator=g, dtype=torch.float64), dim=-1)
             for n in (3, 7, 1, 5)]
    full = pairwise_dtw(feats)
    for i, x in enumerate(feats):  # the full matrix against the naive DTW of each pair
        for j, y in enumerate(feats):
            d = (x @ y.T).clamp(-1, 1).acos() / math.pi
            assert abs(full[i, j].item() - naive_dtw(d.numpy())) < 1e-6
    needed = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    part = pairwise_dtw(feats, needed=needed)
    assert torch.equal(part[needed], full[needed])
    assert torch.isnan(part[~needed]).all()
