"""k-nearest-neighbour matching of feature frames by cosine similarity (kNN-VC, kNN-TTS).

    matched = knn_match(source, target, k=4)          # (T, D): each frame -> mean of its 4 NNs
    mixed = interpolate(source, matched, lam=0.8)     # kNN-TTS: 0 = source, 1 = retrieved
    train_feats = prematch(utterance_feats, speakers) # the vocoder's "prematched" inputs

Matching is a chunked matrix product (queries x keys blocks, running top-k), so memory stays
bounded by ``chunk_size**2`` whatever the lengths, and no Python loop runs over frames.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor


def knn_indices(query: Tensor, keys: Tensor, k: int, chunk_size: int = 2048,
                query_groups: Optional[Tensor] = None, key_groups: Optional[Tensor] = None) -> Tensor:
    """Indices (T, k) of the ``k`` keys of highest cosine similarity to each query row, best first.

    Args:
      query: (T, D); keys: (N, D).
      query_groups, key_groups: optional (T,) and (N,) integer labels: a key is never matched to a
        query of the same label (prematching: not to a frame of the query's own utterance).
    """
    if query.dim() != 2 or keys.dim() != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(f"knn: query {tuple(query.shape)} and keys {tuple(keys.shape)} must be (T, D) and (N, D)")
    if (query_groups is None) != (key_groups is None):
        raise ValueError("knn: give both query_groups and key_groups, or neither")
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(f"knn: k={k} needs 1 <= k <= the number of target frames ({keys.shape[0]})")
    q = torch.nn.functional.normalize(query.float(), dim=1)
    kn = torch.nn.functional.normalize(keys.float(), dim=1)
    out = []
    for qs in range(0, q.shape[0], chunk_size):
        qc = q[qs: qs + chunk_size]
        best_val = qc.new_full((qc.shape[0], 0), float("-inf"))
        best_idx = torch.zeros(qc.shape[0], 0, dtype=torch.long, device=q.device)
        for ks in range(0, kn.shape[0], chunk_size):
            sim = qc @ kn[ks: ks + chunk_size].T  # (q, n) cosine similarities
            if query_groups is not None:
                same = query_groups[qs: qs + chunk_size, None] == key_groups[None, ks: ks + chunk_size]
                sim = sim.masked_fill(same, float("-inf"))
            val, idx = sim.topk(min(k, sim.shape[1]), dim=1)
            val, pos = torch.cat([best_val, val], 1).topk(min(k, best_val.shape[1] + val.shape[1]), dim=1)
            best_idx = torch.cat([best_idx, idx + ks], 1).gather(1, pos)
            best_val = val
        if query_groups is not None and torch.isinf(best_val).any():
            raise ValueError(f"knn: fewer than k={k} keys outside a query's own group")
        out.append(best_idx)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


def knn_match(source: Tensor, target: Tensor, k: int = 4, chunk_size: int = 2048) -> Tensor:
    """Each source frame replaced by the mean of its ``k`` nearest target frames (cosine).

    source: (T, D); target: (N, D), the target speaker's reference frames. Returns (T, D).
    """
    idx = knn_indices(source, target, k, chunk_size)
    return target[idx].mean(dim=1).to(source.dtype)


def interpolate(source: Tensor, matched: Tensor, lam: float) -> Tensor:
    """kNN-TTS's interpolation ``lam * matched + (1 - lam) * source``: 0 keeps the source's
    features, 1 takes the retrieved ones. Both (T, D)."""
    if source.shape != matched.shape:
        raise ValueError(f"interpolate: shapes differ {tuple(source.shape)} vs {tuple(matched.shape)}")
    if lam == 0:
        return source.clone()
    if lam == 1:
        return matched.clone()
    return lam * matched + (1.0 - lam) * source


def prematch(utterances: Sequence[Tensor], speakers: Sequence[str], k: int = 4,
             chunk_size: int = 2048) -> List[Tensor]:
    """kNN-VC's prematched training features: every utterance's frames replaced by the mean of
    their ``k`` nearest frames among the *other* utterances of the same speaker, so that the
    vocoder learns from the kind of input it gets at conversion time.

    utterances: (T_i, D) each; speakers: the speaker of each. Returns (T_i, D) each, in order.
    """
    if len(utterances) != len(speakers):
        raise ValueError(f"prematch: {len(utterances)} utterances but {len(speakers)} speaker labels")
    out: List[Optional[Tensor]] = [None] * len(utterances)
    for spk in sorted(set(speakers)):
        members = [i for i, s in enumerate(speakers) if s == spk]
        if len(members) < 2:
            raise ValueError(f"prematch: speaker {spk!r} has {len(members)} utterance; prematching needs 2 or more")
        frames = torch.cat([utterances[i] for i in members])
        groups = torch.cat([torch.full((utterances[i].shape[0],), j, dtype=torch.long) for j, i in enumerate(members)])
        idx = knn_indices(frames, frames, k, chunk_size, query_groups=groups, key_groups=groups)
        matched = frames[idx].mean(dim=1)
        for piece, i in zip(matched.split([utterances[i].shape[0] for i in members]), members):
            out[i] = piece.to(utterances[i].dtype)
    return out  # type: ignore[return-value]
