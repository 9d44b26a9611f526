"""Scores of the probing tasks: error rates, equal error rate, subsequence DTW, MAP and MTWV."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from icefall.eval.wer import compute_wer


def error_rate(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> float:
    """Edit-distance error rate in percent (kaldialign's alignment): PER over phones, WER over
    words."""
    return compute_wer([(str(i), r, h) for i, (r, h) in enumerate(zip(refs, hyps))]).wer


def equal_error_rate(scores: Sequence[float], labels: Sequence[int]) -> float:
    """EER (a fraction) of a verification trial list: ``labels`` 1 for a target (same speaker)
    trial, 0 otherwise; a trial is accepted when its score >= the threshold. The false-accept
    and false-reject rates are taken at every distinct score and linearly interpolated where
    they cross."""
    return eer_and_threshold(scores, labels)[0]


def eer_and_threshold(scores: Sequence[float], labels: Sequence[int]) -> Tuple[float, float]:
    """(EER as :func:`equal_error_rate`, the score where the rates cross): the threshold is
    interpolated between the two distinct scores around the crossing with the same weight as the
    rates, so accepting ``score >= threshold`` takes exactly the trials scored at or above the
    upper of the two."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("EER needs both target and non-target trials")
    thresholds = np.append(np.unique(s), np.inf)
    far = np.array([(s[~y] >= t).mean() for t in thresholds])  # decreasing
    frr = np.array([(s[y] < t).mean() for t in thresholds])  # increasing
    k = int(np.argmax(frr >= far))  # the first threshold where the curves have crossed
    if k == 0:
        return float(far[0]), float(thresholds[0])
    a0, a1, b0, b1 = far[k - 1], far[k], frr[k - 1], frr[k]
    t = (a0 - b0) / ((a0 - b0) - (a1 - b1))
    # k is never the appended inf: at the highest score either a non-target is accepted (far > 0,
    # frr = 1) or a target is (far = 0); both have crossed
    return float(a0 + t * (a1 - a0)), float(thresholds[k - 1] + t * (thresholds[k] - thresholds[k - 1]))


def subsequence_dtw(query: Tensor, docs: Sequence[Tensor]) -> Tensor:
    """Cost of the best match of ``query`` (Tq, D) anywhere inside each of ``docs`` ((Td, D)
    each): subsequence DTW with cosine distance, steps (1,0), (0,1), (1,1), free start and end
    in the document, the path cost divided by Tq. Returns (N,) costs (lower: better match).

    Each query row is one vectorised min-plus prefix scan: with A the best cost of reaching
    (i, j) from row i-1 and S the running sum of row i's local costs, D[i, j] = S[j] +
    min_{k<=j}(A[k] - S[k-1])."""
    n, tq = len(docs), query.shape[0]
    lens = torch.tensor([d.shape[0] for d in docs])
    width = int(lens.max())
    padded = torch.zeros(n, width, query.shape[1])
    for i, d in enumerate(docs):
        padded[i, : d.shape[0]] = d
    cost = 1 - torch.einsum("qd,ntd->nqt", F.normalize(query.float(), dim=-1), F.normalize(padded, dim=-1))
    prev = cost[:, 0]  # first query frame: may start anywhere
    for i in range(1, tq):
        a = torch.minimum(prev, torch.cat([torch.full((n, 1), float("inf")), prev[:, :-1]], dim=1))
        s = cost[:, i].cumsum(1)
        s_before = torch.cat([torch.zeros(n, 1), s[:, :-1]], dim=1)
        prev = s + torch.cummin(a - s_before, dim=1).values
    valid = torch.arange(width).unsqueeze(0) < lens.unsqueeze(1)
    return prev.masked_fill(~valid, float("inf")).min(1).values / tq


def average_precision(scores: Sequence[float], relevant: Sequence[bool]) -> float:
    """AP of one ranked list (higher score ranks first; ties keep the given order)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    rel = np.asarray(relevant, dtype=bool)[order]
    if not rel.any():
        raise ValueError("average precision needs at least one relevant item")
    hits = np.cumsum(rel)
    return float((hits[rel] / (np.flatnonzero(rel) + 1)).mean())


def twv_beta(p_target: float, c_miss: float, c_fa: float) -> float:
    """The false-alarm weight of TWV: beta = (C_fa / C_miss) * (1 / P_target - 1)."""
    return c_fa / c_miss * (1.0 / p_target - 1.0)


def maximum_twv(scores: Sequence[Sequence[float]], relevant: Sequence[Sequence[bool]], beta: float) -> Tuple[float, float]:
    """MTWV over queries that each score every document: TWV(theta) = 1 - mean_q (P_miss(q) +
    beta * P_fa(q)), a document detected when its score >= theta (one threshold for all
    queries), P_miss = missed relevant / relevant, P_fa = false alarms / non-relevant documents;
    queries without relevant documents are left out. Returns (MTWV, its threshold); no
    detection at all gives TWV 0 (threshold inf)."""
    s = [np.asarray(x, dtype=np.float64) for x in scores]
    r = [np.asarray(x, dtype=bool) for x in relevant]
    keep = [i for i in range(len(s)) if r[i].any()]
    if not keep:
        raise ValueError("MTWV needs a query with at least one relevant document")
    best, best_t = 0.0, float("inf")
    for t in np.unique(np.concatenate([s[i] for i in keep])):
        loss = 0.0
        for i in keep:
            det = s[i] >= t
            p_miss = 1 - (det & r[i]).sum() / r[i].sum()
            p_fa = (det & ~r[i]).sum() / max((~r[i]).sum(), 1)
            loss += p_miss + beta * p_fa
        twv = 1 - loss / len(keep)
        if twv > best:
            best, best_t = float(twv), float(t)
    return best, best_t


def ctc_greedy(logits: Tensor, lens: Tensor, blank: int = 0) -> List[List[int]]:
    """Best-path CTC decoding: (B, T, V) logits -> token ids (repeats merged, blanks removed)."""
    out = []
    for seq, n in zip(logits.argmax(-1), lens.tolist()):
        ids = torch.unique_consecutive(seq[: int(n)]).tolist()
        out.append([i for i in ids if i != blank])
    return out


def qbe_scores(queries: Dict[str, Tensor], docs: Dict[str, Tensor]) -> Dict[str, np.ndarray]:
    """``{query id: (N_docs,) scores}`` = minus the subsequence-DTW cost against every document
    (in ``docs`` order)."""
    doc_list = list(docs.values())
    return {q: (-subsequence_dtw(x, doc_list)).numpy() for q, x in queries.items()}
