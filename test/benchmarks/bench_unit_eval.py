#!/usr/bin/env python3
"""Speed of span masking, k-means and ABX on CPU, each against a naive reference in the same run.

    python test/benchmarks/bench_unit_eval.py [--threads 1] [--items 3000]
"""
import argparse
import time

import numpy as np
import torch

from icefall.eval.abx import Item, abx_score, dtw_batch
from icefall.ssl.kmeans import KMeans
from icefall.nn.masking import compute_mask


def timeit(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def naive_mask(lengths, T, p, L, min_masks, rng):
    """Per-utterance loop in the style of fairseq's compute_mask_indices (numpy)."""
    mask = np.zeros((len(lengths), T), dtype=bool)
    for b, n in enumerate(lengths):
        k = max(min_masks, int(p * n / L + rng.random()))
        starts = rng.choice(n - L + 1, min(k, n - L + 1), replace=False)
        for s in starts:
            mask[b, s : s + L] = True
    return mask


def naive_dtw(d):
    N, M = d.shape
    c = np.full((N + 1, M + 1), np.inf)
    c[0, 0] = 0
    for i in range(1, N + 1):
        for j in range(1, M + 1):
            c[i, j] = d[i - 1, j - 1] + min(c[i - 1, j - 1], c[i, j - 1], c[i - 1, j])
    return c[N, M]


def synthetic_items(n_items, dim, rate, seed=0):
    """n_items phone items over 20 speakers, 8 phones, in utterances of 20 phones."""
    rng = np.random.default_rng(seed)
    phones = [f"p{i}" for i in range(8)]
    feats, items = {}, []
    u = 0
    while len(items) < n_items:
        seq = rng.choice(phones, 22)
        durs = rng.integers(3, 13, 22)  # frames
        utt, spk = f"u{u}", f"s{u % 20}"
        feats[utt] = torch.randn(int(durs.sum()), dim)
        t = np.concatenate([[0], np.cumsum(durs)]) / rate
        for k in range(1, 21):
            items.append(Item(utt, t[k], t[k + 1], seq[k], seq[k - 1], seq[k + 1], spk))
        u += 1
    return feats, items[:n_items]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--items", type=int, default=3000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []

    # Masking: B=64 utterances of up to 1500 frames (30 s at 50 Hz).
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(500, 1501, (64,), generator=g)
    t_vec, _ = timeit(lambda: compute_mask((64, 1500), lengths, 0.65, 10, generator=g), 5)
    rng = np.random.default_rng(0)
    t_ref, _ = timeit(lambda: naive_mask(lengths.tolist(), 1500, 0.65, 10, 2, rng), 5)
    rows.append(("span mask B=64 T=1500", f"{t_vec * 1e3:.2f} ms", f"{t_ref * 1e3:.2f} ms (numpy loop)", t_ref / t_vec))

    # DTW: 20000 pairs of 12x12 frame-distance matrices vs a Python double loop.
    P, N = 20000, 12
    dist = torch.rand(P, N, N, generator=g)
    n = torch.randint(3, N + 1, (P,), generator=g)
    t_vec, _ = timeit(lambda: dtw_batch(dist, n, n))
    sub = 300
    t_ref, _ = timeit(lambda: [naive_dtw(dist[p, : n[p], : n[p]].numpy()) for p in range(sub)], 1)
    t_ref *= P / sub
    rows.append((f"DTW {P} pairs <= {N}x{N}", f"{t_vec * 1e3:.1f} ms", f"{t_ref * 1e3:.0f} ms (python loop, extrapolated)", t_ref / t_vec))

    # k-means: 200k x 39 rows, 100 clusters, 1 epoch, batches of 10k.
    x = torch.randn(200_000, 39, generator=g)
    chunks = list(x.split(1000))
    t_fit, km = timeit(lambda: KMeans(100).fit(chunks, batch_size=10_000, generator=torch.Generator().manual_seed(0)), 1)
    t_pred, _ = timeit(lambda: km.predict(x), 3)
    t_cdist, _ = timeit(lambda: torch.cdist(x, km.centroids).argmin(1), 3)
    rows.append(("k-means fit 200k x 39, K=100", f"{t_fit:.2f} s", "-", float("nan")))
    rows.append(("k-means predict 200k x 39, K=100", f"{t_pred * 1e3:.0f} ms", f"{t_cdist * 1e3:.0f} ms (torch.cdist)", t_cdist / t_pred))

    # ABX on random features (error ~ 0.5), within + across, default subsampling.
    for dim in (39, 768):
        feats, items = synthetic_items(args.items, dim, 50)
        t_abx, res = timeit(lambda: abx_score(feats, items, 50), 1)
        rows.append(
            (f"ABX {len(items)} items D={dim} (50 Hz)", f"{t_abx:.2f} s", f"within {res['within']:.3f} across {res['across']:.3f}", float("nan"))
        )

    print(f"threads={args.threads}")
    print("| case | ours | reference | speed-up |")
    print("|---|---|---|---|")
    for name, ours, ref, ratio in rows:
        print(f"| {name} | {ours} | {ref} | {'-' if ratio != ratio else f'{ratio:.1f}x'} |")


if __name__ == "__main__":
    main()
