"""Mini-batch k-means for HuBERT-style targets, and writing its labels into lhotse cuts.

HuBERT iteration 1 clusters 39-d MFCCs (13 + deltas + delta-deltas, 100 Hz); later iterations
cluster an intermediate layer of the previous model. Fitting streams over any iterable of
feature matrices (utterances or batches, CPU or GPU tensors), so the data never has to fit in
memory: rows are regrouped into mini-batches of ``batch_size`` and each centroid moves towards
its assigned points with a per-centroid learning rate 1/count (Sculley 2010, the update of
sklearn's MiniBatchKMeans that fairseq's HuBERT recipe uses). Initialisation is k-means++ on
the first ``init_size`` rows of the stream.

Labels go into ``cut.custom["kmeans"]`` as a space-separated string of ints (the convention
shared by every recipe here).
"""
import itertools
import logging
import math
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from icefall.utils import atomic_write_path

Pathlike = Union[str, Path]
FORMAT = "icefall-kmeans-v1"


def nearest_centroids(
    x: torch.Tensor, c: torch.Tensor, chunk_size: int = 4096
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest row of c (K, D) for each row of x (N, D): (squared distance (N,), index (N,)).

    The argmin needs only ||c||^2 - 2 x.c (one fused matmul per chunk of ``chunk_size`` rows, so
    the (chunk, K) score matrix stays in cache: 4096 rows took 22% less CPU than 16384
    at 768-d, K=500); ||x||^2 is added to the N minima afterwards."""
    c = c.to(x.device, torch.float32)
    c_sq = c.pow(2).sum(1)[None, :]
    dmin, labels = [], []
    for i in range(0, x.shape[0], chunk_size):
        xi = x[i : i + chunk_size].float()
        smin, li = torch.addmm(c_sq, xi, c.T, alpha=-2).min(1)
        dmin.append(smin.add_(xi.pow(2).sum(1)).clamp_(min=0))
        labels.append(li)
    if not labels:
        return x.new_zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(dmin), torch.cat(labels)


def kmeans_plus_plus(
    x: torch.Tensor,
    n_clusters: int,
    generator: Optional[torch.Generator] = None,
    n_local_trials: Optional[int] = None,
) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), greedy variant.

    The first centroid is a uniformly drawn row; each next one is drawn with probability
    proportional to the squared distance to the nearest centroid so far. The greedy variant
    draws ``n_local_trials`` candidates (default 2 + log k, as in sklearn) and keeps the one
    that lowers the potential most; ``n_local_trials=1`` is the original algorithm.

    Args:
      x: (N, D) float tensor, N >= n_clusters. ``generator`` must live on x's device.
    Returns:
      (n_clusters, D) centroids, each a row of x.
    """
    N = x.shape[0]
    if N < n_clusters:
        raise ValueError(f"need at least {n_clusters} points for k-means++, got {N}")
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    x = x.float()
    x_sq = x.pow(2).sum(1)  # (N,), computed once: each step then costs one thin matmul

    def dist_to_rows(idx: torch.Tensor) -> torch.Tensor:  # (len(idx), N)
        return torch.addmm(x_sq[None, :], x[idx], x.T, alpha=-2).add_(x_sq[idx, None]).clamp_(min=0)

    first = torch.randint(N, (1,), generator=generator, device=x.device)
    idx = [first]
    closest = dist_to_rows(first)[0]  # (N,)
    for _ in range(1, n_clusters):
        # (multinomial takes unnormalised weights; all zero: fewer distinct points than
        # clusters, fall back to uniform draws)
        weights = closest if closest.sum() > 0 else torch.ones_like(closest)
        cand = torch.multinomial(weights, n_local_trials, replacement=True, generator=generator)
        d_cand = torch.minimum(dist_to_rows(cand), closest[None, :])  # (trials, N)
        best = d_cand.sum(1).argmin()
        idx.append(cand[best : best + 1])
        closest = d_cand[best]
    return x[torch.cat(idx)].clone()


class KMeans:
    """k-means model: centroids (K, D) plus per-centroid counts and free-form metadata.

    Usage::

        km = KMeans(500).fit(feature_iterable, num_epochs=1)
        labels = km.predict(feats)          # feats (T, D) -> (T,) int64
        km.save("kmeans.pt"); km = KMeans.load("kmeans.pt")
    """

    def __init__(self, n_clusters: int, meta: Optional[Dict] = None):
        self.n_clusters = n_clusters
        self.centroids: Optional[torch.Tensor] = None  # (K, D) float32
        self.counts: Optional[torch.Tensor] = None  # (K,) float64, points won in the last epoch
        self.meta: Dict = dict(meta or {})

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @torch.no_grad()
    def init(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> None:
        """k-means++ initialisation from x (N, D)."""
        self.centroids = kmeans_plus_plus(x, self.n_clusters, generator)
        self.counts = torch.zeros(self.n_clusters, dtype=torch.float64, device=x.device)

    @torch.no_grad()
    def partial_fit(self, x: torch.Tensor) -> float:
        """One mini-batch update with x (N, D); returns the batch inertia before the update.

        Each centroid becomes the running mean of every point ever assigned to it:
        c <- c + (sum_x - n c) / (count + n).
        """
        x = x.to(self.centroids.device, torch.float32)
        dmin, labels = nearest_centroids(x, self.centroids)
        n = torch.bincount(labels, minlength=self.n_clusters).to(torch.float64)
        sums = torch.zeros_like(self.centroids, dtype=torch.float64).index_add_(0, labels, x.double())
        self.counts += n
        hit = n > 0
        c = self.centroids.double()
        c[hit] += (sums[hit] - n[hit, None] * c[hit]) / self.counts[hit, None]
        self.centroids = c.float()
        return dmin.sum().item()

    def fit(
        self,
        features: Iterable[torch.Tensor],
        num_epochs: int = 1,
        batch_size: int = 10000,
        init_size: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> "KMeans":
        """Fit by streaming over ``features`` (each item (T_i, D), any device).

        Args:
          features: re-iterable (list, dataset, ...) if ``num_epochs > 1``.
          num_epochs: passes over ``features``; each pass after the first of this call restarts
            ``counts`` (see the loop). 3 passes reach the inertia of sklearn's MiniBatchKMeans
            with fairseq's HuBERT settings (docs/RESULTS.md, k-means).
          batch_size: rows per mini-batch update.
          init_size: rows used for k-means++ (default ``max(3 * K, batch_size)``); they are
            then used for updates like any other rows.
          generator: torch.Generator on ``device`` for seeding and shuffling.
          device: where centroids live and the work happens (default: the centroids' device if
            already fitted, else that of the first item).
        """
        if num_epochs > 1 and iter(features) is features:
            raise ValueError("num_epochs > 1 needs a re-iterable, not a one-shot iterator")
        init_size = init_size or max(3 * self.n_clusters, batch_size)
        if device is None and self.centroids is not None:
            device = self.centroids.device
        for epoch in range(num_epochs):
            stream = iter(features)
            if device is None:
                first = next(stream, None)
                if first is None:
                    raise ValueError("no features to fit")
                first = torch.as_tensor(first)
                device = first.device
                stream = itertools.chain([first], stream)
            stream = (torch.as_tensor(f).to(device, torch.float32) for f in stream)
            if self.centroids is None:
                seed_rows = _take_rows(stream, init_size)
                if seed_rows is None:
                    raise ValueError("no features to fit")
                self.init(seed_rows[:init_size], generator)  # (an item may hold more rows)
                stream = itertools.chain([seed_rows], stream)
            elif epoch > 0:
                # With counts that only grow, a second pass would hardly move a centroid (step
                # 1/count): restart them, so that each epoch makes every centroid the mean of
                # the points it wins in that epoch, a streamed Lloyd step from better centroids.
                self.counts.zero_()
            inertia, rows = 0.0, 0
            for batch in _minibatches(stream, batch_size, generator):
                inertia += self.partial_fit(batch)
                rows += batch.shape[0]
            empty = int((self.counts == 0).sum())
            logging.info(
                f"k-means epoch {epoch}: {rows} rows, mean sq. distance "
                f"{inertia / max(rows, 1):.4f}, {empty} empty clusters"
            )
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
        """Nearest centroid of each row: x (N, D) -> (N,) int64 on x's device."""
        return nearest_centroids(torch.as_tensor(x), self.centroids, chunk_size)[1]

    @torch.no_grad()
    def inertia(self, x: torch.Tensor) -> float:
        """Sum of squared distances of rows of x (N, D) to their nearest centroid."""
        return nearest_centroids(torch.as_tensor(x), self.centroids)[0].sum().item()

    def save(self, path: Pathlike) -> None:
        """Write a small .pt file (CPU tensors + metadata), atomically."""
        path = Path(path)
        state = {
            "format": FORMAT,
            "n_clusters": self.n_clusters,
            "centroids": self.centroids.cpu(),
            "counts": self.counts.cpu(),
            "meta": self.meta,
        }
        tmp = atomic_write_path(path)
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Pathlike, map_location: Union[str, torch.device] = "cpu") -> "KMeans":
        from icefall.checkpoint import load_file

        state = load_file(path, map_location=map_location)
        if state.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file")
        km = cls(state["n_clusters"], state["meta"])
        km.centroids, km.counts = state["centroids"], state["counts"]
        return km


def _take_rows(stream: Iterator[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    """Concatenate items from ``stream`` until at least n rows (or the stream ends)."""
    buf, have = [], 0
    for f in stream:
        buf.append(f)
        have += f.shape[0]
        if have >= n:
            break
    return torch.cat(buf) if buf else None


def _minibatches(
    stream: Iterator[torch.Tensor], batch_size: int, generator: Optional[torch.Generator]
) -> Iterator[torch.Tensor]:
    """Regroup the rows of a stream into shuffled batches of batch_size rows (last one shorter).

    Shuffling inside each batch-sized window breaks up consecutive frames of one utterance."""
    while True:
        rows = _take_rows(stream, batch_size)
        if rows is None:
            return
        rows = rows[torch.randperm(rows.shape[0], generator=generator, device=rows.device)]
        for i in range(0, rows.shape[0], batch_size):
            yield rows[i : i + batch_size]


# ----------------------------------------------------------------------------- features


def compute_deltas(x: torch.Tensor, window: int = 2) -> torch.Tensor:
    """Kaldi/HTK regression deltas along time: x (T, D) -> (T, D).

    d_t = sum_{n=1..N} n (x_{t+n} - x_{t-n}) / (2 sum_{n=1..N} n^2), edges replicated.
    """
    T = x.shape[0]
    n = torch.arange(1, window + 1, device=x.device, dtype=x.dtype)
    t = torch.arange(T, device=x.device)
    fwd = x[(t[:, None] + n.long()[None, :]).clamp(max=T - 1)]  # (T, N, D)
    bwd = x[(t[:, None] - n.long()[None, :]).clamp(min=0)]
    return ((fwd - bwd) * n[None, :, None]).sum(1) / (2 * n.pow(2).sum())


def mfcc_39(samples: Union[np.ndarray, torch.Tensor], sampling_rate: int = 16000) -> torch.Tensor:
    """HuBERT iteration-1 features: 13 MFCCs (lhotse's Kaldi-compatible extractor, no energy,
    10 ms shift) with deltas and delta-deltas. samples (N,) -> (T, 39), T ~ N / (sr / 100)."""
    from lhotse import Mfcc, MfccConfig

    m = Mfcc(MfccConfig(sampling_rate=sampling_rate, num_ceps=13, use_energy=False))
    c = torch.as_tensor(m.extract(np.asarray(samples, dtype=np.float32), sampling_rate))
    d = compute_deltas(c)
    return torch.cat([c, d, compute_deltas(d)], dim=1)


def fbank_80(samples: Union[np.ndarray, torch.Tensor], sampling_rate: int = 16000) -> torch.Tensor:
    """80-d log-mel fbank at 100 Hz (the VietASR-style alternative to MFCC): (N,) -> (T, 80)."""
    from lhotse import Fbank, FbankConfig

    f = Fbank(FbankConfig(sampling_rate=sampling_rate, num_filters=80))
    return torch.as_tensor(f.extract(np.asarray(samples, dtype=np.float32), sampling_rate))


def cut_features(cut, kind: str = "mfcc") -> torch.Tensor:
    """Features of a lhotse cut for clustering, (T, D) at 100 Hz.

    kind: "mfcc" (39-d from audio), "fbank" (80-d from audio), or "stored" (the cut's
    precomputed features, e.g. from ``data/fbank``).
    """
    if kind == "stored":
        return torch.as_tensor(cut.load_features())
    audio = cut.load_audio()[0]
    if kind == "mfcc":
        return mfcc_39(audio, cut.sampling_rate)
    if kind == "fbank":
        return fbank_80(audio, cut.sampling_rate)
    raise ValueError(f"unknown feature kind {kind!r}")


# ----------------------------------------------------------------------------- labels


def labels_to_str(labels: Iterable[int]) -> str:
    return " ".join(map(str, (int(v) for v in labels)))


def write_kmeans_labels(
    cuts: Iterable,
    model: KMeans,
    feature_fn: Callable[[object], torch.Tensor],
    out_path: Pathlike,
    key: str = "kmeans",
) -> Path:
    """Label every cut and write a new manifest with ``cut.custom[key]`` set.

    Args:
      cuts: a CutSet (eager or lazy) or any iterable of cuts; it is streamed.
      model: fitted KMeans.
      feature_fn: cut -> (T, D) features at the label rate (e.g. ``cut_features``, or a
        function running a model layer).
      out_path: output manifest (``.jsonl.gz`` recommended). Written to a temporary sibling and
        renamed at the end, so a crash never leaves a half-written manifest.
    Returns:
      out_path.
    """
    from lhotse import CutSet

    out_path = Path(out_path)
    tmp = atomic_write_path(out_path)
    try:
        with CutSet.open_writer(tmp) as writer:
            for cut in cuts:
                labels = model.predict(feature_fn(cut))
                writer.write(cut.with_custom(key, labels_to_str(labels.tolist())))
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path
