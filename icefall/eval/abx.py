"""Phone ABX discriminability (ZeroSpeech 2021 / Libri-Light protocol), written from scratch.

An *item* is one phone occurrence with its left and right neighbour (the triphone context), its
speaker and its time span. For a context c, a speaker s and two central phones a != b:

* within speaker: A, X are distinct items of (c, a, s), B an item of (c, b, s);
* across speaker: A, B as above from speaker s, X an item of (c, a, s') for another speaker s'.

The triplet is an error when d(A, X) > d(B, X) (a tie counts 1/2). The error rate of each
(c, s, a, b) cell (and s' for across) is averaged over contexts (and X speakers), then over
speakers, then over the ordered phone pairs (a, b): the reduction of Libri-Light's eval_ABX.

d(., .) is the frame distance averaged along the DTW path (cumulative cost divided by the path
length): the angular distance arccos(cos)/pi for embeddings, or the symmetric KL divergence for
probability vectors (codebook / head posteriors). Items take the frames whose centre
(i + 0.5) / frame_rate lies in [onset, offset] (fastabx's fixed Libri-Light slicing).

Speed: all item pairs that share a context are aligned at once with an anti-diagonal DTW
vectorised over pairs, so a few thousand items take seconds on a CPU.
"""
import logging
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

Alignment = Mapping[str, Sequence[Tuple[float, float, str]]]  # utt -> [(start_s, end_s, label)]
SILENCES = ("", "sil", "SIL", "sp", "spn", "SPN", "<sil>", "<eps>")


@dataclass(frozen=True)
class Item:
    file: str
    onset: float
    offset: float
    phone: str
    prev: str
    next: str
    speaker: str


def segment_frames(onset: float, offset: float, frame_rate: float) -> Tuple[int, int]:
    """Frames [start, end) whose centre (i + 0.5) / frame_rate lies in [onset, offset].

    The one place that maps seconds to frames for ABX, PNMI and MAP@R."""
    eps = 1e-6  # 0.235 * 100 is 23.499999...: times are given to the microsecond at best
    start = math.ceil(onset * frame_rate - 0.5 - eps)
    end = math.floor(offset * frame_rate - 0.5 + eps) + 1
    return max(start, 0), end


# ----------------------------------------------------------------------------- items


def items_from_alignments(
    alignments: Alignment,
    speakers: Mapping[str, str],
    ignore: Iterable[str] = SILENCES,
) -> List[Item]:
    """One item per phone that has a left and right neighbour; items whose phone or context
    contains a label in ``ignore`` (silences) are dropped."""
    ignore = set(ignore)
    items = []
    for utt, segs in alignments.items():
        for (_, _, prev), (on, off, ph), (_, _, nxt) in zip(segs, segs[1:], segs[2:]):
            if ph in ignore or prev in ignore or nxt in ignore:
                continue
            items.append(Item(utt, float(on), float(off), ph, prev, nxt, speakers[utt]))
    return items


def read_item_file(path: Union[str, Path]) -> List[Item]:
    """Read a ZeroSpeech item file: a header line, then
    ``#file onset offset #phone prev-phone next-phone speaker`` per line."""
    from icefall.utils import naming_file_on_decode_error

    items = []
    with open(path, encoding="utf-8") as f, naming_file_on_decode_error(path):
        next(f)  # header
        for line in f:
            if line.strip():
                file, on, off, ph, prev, nxt, spk = line.split()
                items.append(Item(file, float(on), float(off), ph, prev, nxt, spk))
    return items


def write_item_file(items: Iterable[Item], path: Union[str, Path]) -> None:
    with open(path, "w") as f:
        f.write("#file onset offset #phone prev-phone next-phone speaker\n")
        for it in items:
            f.write(f"{it.file} {it.onset:.4f} {it.offset:.4f} {it.phone} {it.prev} {it.next} {it.speaker}\n")


# ----------------------------------------------------------------------------- distances


def angular_frame_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x (P, N, D), y (P, M, D), rows L2-normalised -> (P, N, M) arccos(x.y) / pi in [0, 1]."""
    return torch.bmm(x, y.transpose(1, 2)).clamp_(-1, 1).acos_() / math.pi


def kl_symmetric_frame_distance(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """p (P, N, D), q (P, M, D) probability rows -> (P, N, M) (KL(p||q) + KL(q||p)) / 2.

    Expanded as sum_d (p - q)(log p - log q) / 2 so only batched matmuls are needed."""
    lp, lq = (p + eps).log(), (q + eps).log()
    self_p = (p * lp).sum(-1)[:, :, None]
    self_q = (q * lq).sum(-1)[:, None, :]
    cross = torch.bmm(p, lq.transpose(1, 2)) + torch.bmm(lp, q.transpose(1, 2))
    return 0.5 * (self_p + self_q - cross)


FRAME_DISTANCES = {"angular": angular_frame_distance, "kl_symmetric": kl_symmetric_frame_distance}


def dtw_batch(dist: torch.Tensor, n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Path-length-normalised DTW for a batch of padded frame-distance matrices.

    Steps (1,0), (0,1), (1,1); cost = sum of frame distances on the best path, divided by the
    number of cells on it. Among equal-cost predecessors the diagonal wins, then the left
    (j-1) one, as in Libri-Light's implementation; the path length is carried forward with the
    cost, which equals backtracking the chosen path.

    The DP runs over anti-diagonals k = i + j, each stored as a (P, N) row-indexed vector, so
    the predecessors (i-1, j-1), (i, j-1), (i-1, j) are plain shifts of the two previous
    diagonals: a few vector ops per step, no per-pair or per-cell Python work.

    Args:
      dist: (P, N, M) frame distances, valid in [:n[p], :m[p]].
      n, m: (P,) int lengths >= 1.
    Returns:
      (P,) DTW distances.
    """
    P, N, M = dist.shape
    K = N + M - 1
    dev = dist.device
    # skew[k, p, i] = dist[p, i, k - i], inf where k - i is outside [0, M).
    i = torch.arange(N, device=dev)[:, None]
    j = torch.arange(K, device=dev)[None, :] - i  # (N, K)
    valid = (j >= 0) & (j < M)
    skew = dist.gather(2, j.clamp(0, M - 1).expand(P, N, K)).masked_fill(~valid, float("inf"))
    skew = skew.permute(2, 0, 1).contiguous()

    def shift(t: torch.Tensor) -> torch.Tensor:  # value of row i-1 at position i
        return torch.nn.functional.pad(t[:, :-1], (1, 0), value=float("inf"))

    inf_diag = torch.full((P, N), float("inf"), dtype=dist.dtype, device=dev)
    c2, l2 = inf_diag, torch.zeros_like(inf_diag)
    c1, l1 = skew[0], torch.ones_like(inf_diag)
    costs, lengths = [c1], [l1]
    for k in range(1, K):
        diag, left, up = shift(c2), c1, shift(c1)
        take_diag = (diag <= left) & (diag <= up)  # ties: diagonal, then left, then up
        take_left = ~take_diag & (left <= up)
        best = torch.where(take_diag, diag, torch.where(take_left, left, up))
        lens = torch.where(take_diag, shift(l2), torch.where(take_left, l1, shift(l1))) + 1
        c2, l2, c1, l1 = c1, l1, skew[k] + best, lens
        costs.append(c1)
        lengths.append(l1)
    p = torch.arange(P, device=dev)
    last_k, last_i = n + m - 2, n - 1
    return torch.stack(costs)[last_k, p, last_i] / torch.stack(lengths)[last_k, p, last_i]


def pairwise_dtw(
    feats: List[torch.Tensor],
    distance: str = "angular",
    max_elements: int = 16_000_000,
    needed: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """DTW distance between ordered pairs of segments: all of them, or those ``needed``.

    The frame distances between all frames of all segments are computed once (one (F, F)
    matrix, F = total frames) and each pair's (L, L) block is gathered from it, so the
    per-pair work does not grow with the feature dimension.

    Args:
      feats: list of n segments (T_i, D), already normalised as the distance requires.
      max_elements: bound on pairs * L * L per DTW chunk (memory).
      needed: optional (n, n) bool, True where a distance is wanted (e.g. only same-speaker
        pairs for the within-speaker task); other entries are NaN.
    Returns:
      (n, n) tensor, entry [x, y] = DTW(x as rows, y as columns).
    """
    dev = feats[0].device
    nseg = len(feats)
    lens = torch.tensor([f.shape[0] for f in feats], device=dev)
    offsets = lens.cumsum(0) - lens
    frames = torch.cat(feats)[None]  # (1, F, D)
    full = FRAME_DISTANCES[distance](frames, frames)[0]  # (F, F)
    L = int(lens.max())
    # rows[i, t] = index in `frames` of frame t of segment i (repeating its last frame as padding)
    t = torch.arange(L, device=dev)
    rows = offsets[:, None] + torch.minimum(t[None, :], lens[:, None] - 1)  # (n, L)
    if needed is None:
        needed = torch.ones(nseg, nseg, dtype=torch.bool, device=dev)
    xi, yi = needed.to(dev).nonzero(as_tuple=True)
    out = torch.full((nseg, nseg), float("nan"), dtype=full.dtype, device=dev)
    step = max(1, max_elements // (L * L))
    for s in range(0, xi.numel(), step):
        a, b = xi[s : s + step], yi[s : s + step]
        dist = full[rows[a][:, :, None], rows[b][:, None, :]]  # (P, L, L)
        out[a, b] = dtw_batch(dist, lens[a], lens[b])
    return out


def _prepare(x: torch.Tensor, distance: str) -> torch.Tensor:
    x = x.float()
    if distance == "angular":
        # Zero vectors stay zero (distance 1/2 to everything) instead of becoming NaN.
        return torch.nn.functional.normalize(x, dim=-1)
    return x


# ----------------------------------------------------------------------------- scoring


def _cell_error(dxa: np.ndarray, dxb: np.ndarray, exclude_diag: bool) -> float:
    """Error rate over triplets: dxa (nx, na), dxb (nx, nb); X and A share indices if within.

    NumPy on purpose: thousands of tiny cells, where torch's per-op overhead dominates."""
    diff = dxa[:, :, None] - dxb[:, None, :]  # > 0: X closer to B: error
    err = (diff > 0) + 0.5 * (diff == 0)
    if exclude_diag:
        err = err[~np.eye(dxa.shape[0], dtype=bool)]
    return float(err.mean())


def _reduce(scores: Dict[Tuple, List[float]]) -> float:
    """scores: (speaker, a, b) -> error rates (one per context or (context, X speaker)).
    Mean over contexts, then speakers, then phone pairs."""
    by_pair = defaultdict(list)
    for (spk, a, b), errs in scores.items():
        by_pair[(a, b)].append(float(np.mean(errs)))
    return float(np.mean([np.mean(v) for v in by_pair.values()])) if by_pair else float("nan")


def abx_score(
    features: Mapping[str, Union[torch.Tensor, np.ndarray]],
    items: Sequence[Item],
    frame_rate: float,
    distance: str = "angular",
    modes: Sequence[str] = ("within", "across"),
    max_size_group: Optional[int] = 10,
    max_x_across: Optional[int] = 5,
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
) -> Dict[str, float]:
    """ABX error rates (fractions; x100 for the usual %).

    Args:
      features: utt -> (T, D) frames at ``frame_rate`` Hz (embeddings, or probabilities for
        ``distance="kl_symmetric"``).
      items: from ``items_from_alignments`` or ``read_item_file``.
      max_size_group: at most this many items per (context, phone, speaker) cell, drawn at
        random (Libri-Light's default 10; None keeps all).
      max_x_across: at most this many X speakers per (A, B) cell in the across task (default 5).
    Returns:
      {"within": ..., "across": ..., "n_items": ...} for the requested modes.
    """
    rng = random.Random(seed)
    cells: Dict[Tuple, List[torch.Tensor]] = defaultdict(list)  # ((prev, next), spk, phone)
    skipped = 0
    for it in items:
        x = features[it.file]
        start, end = segment_frames(it.onset, it.offset, frame_rate)
        end = min(end, x.shape[0])
        if end <= start:
            skipped += 1
            continue
        seg = torch.as_tensor(x[start:end])
        cells[((it.prev, it.next), it.speaker, it.phone)].append(seg)
    if skipped:
        logging.info(f"ABX: {skipped} items shorter than one frame were skipped")
    if max_size_group is not None:
        cells = {k: rng.sample(v, max_size_group) if len(v) > max_size_group else v for k, v in cells.items()}

    # Per context: (speaker, phone) -> indices into that context's list of segments.
    by_context: Dict[Tuple[str, str], Dict[Tuple[str, str], List[int]]] = defaultdict(dict)
    segs_by_context: Dict[Tuple[str, str], List[torch.Tensor]] = defaultdict(list)
    for (ctx, spk, ph), segs in sorted(cells.items()):
        pool = segs_by_context[ctx]
        by_context[ctx][(spk, ph)] = list(range(len(pool), len(pool) + len(segs)))
        pool.extend(segs)

    within: Dict[Tuple, List[float]] = defaultdict(list)
    across: Dict[Tuple, List[float]] = defaultdict(list)
    n_items = 0
    for ctx, groups in by_context.items():
        n_items += len(segs_by_context[ctx])
        speakers = defaultdict(list)  # speaker -> phones present
        for spk, ph in groups:
            speakers[spk].append(ph)
        if all(len(phs) < 2 for phs in speakers.values()):
            continue  # no (A, B) pair in this context
        # The context's cells: (scores, key, X indices, A indices, B indices, X is A).
        cells_to_score = []
        for spk, phones in speakers.items():
            for a in phones:
                ia = np.array(groups[(spk, a)])
                others = [s for s in speakers if s != spk and (s, a) in groups]
                if max_x_across is not None and len(others) > max_x_across:
                    others = rng.sample(others, max_x_across)
                for b in phones:
                    if b == a:
                        continue
                    ib = np.array(groups[(spk, b)])
                    if "within" in modes and len(ia) > 1:
                        cells_to_score.append((within, (spk, a, b), ia, ia, ib, True))
                    if "across" in modes:
                        for sx in others:
                            cells_to_score.append((across, (spk, a, b), np.array(groups[(sx, a)]), ia, ib, False))
        if not cells_to_score:
            continue
        # DTW only for the (X, A) and (X, B) pairs some cell compares (within: same speaker)
        n = len(segs_by_context[ctx])
        needed = np.zeros((n, n), dtype=bool)
        for _, _, ix, ia, ib, _ in cells_to_score:
            needed[ix[:, None], ia] = True
            needed[ix[:, None], ib] = True
        segs = [_prepare(s, distance).to(device) if device else _prepare(s, distance) for s in segs_by_context[ctx]]
        D = pairwise_dtw(segs, distance, needed=torch.from_numpy(needed)).cpu().double().numpy()
        for scores, key, ix, ia, ib, x_is_a in cells_to_score:
            scores[key].append(_cell_error(D[ix[:, None], ia], D[ix[:, None], ib], x_is_a))
    out: Dict[str, float] = {"n_items": n_items}
    if "within" in modes:
        out["within"] = _reduce(within)
    if "across" in modes:
        out["across"] = _reduce(across)
    return out
