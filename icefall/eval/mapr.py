"""Word discriminability: MAP@R over mean-pooled word segments (Carlin et al. 2011 task,
MAP@R of Musgrave et al. 2020, as used by Algayres et al. 2020 and SpidR).

Each word token is the mean of its frames. For a query token with R > 0 other tokens of the same
word, rank all other tokens by cosine similarity and score

    AP@R = (1/R) * sum_{i=1..R} P(i) * rel(i),  P(i) = precision of the top i,

where rel(i) says whether the i-th retrieved token is the same word. MAP@R is the mean over
queries (tokens whose word occurs only once are not queries but stay in the pool as
distractors).
"""
from typing import Hashable, Iterable, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch

from icefall.eval.abx import SILENCES, Alignment, segment_frames


def map_at_r(embeddings: torch.Tensor, labels: Sequence[Hashable], chunk_size: int = 1024) -> float:
    """MAP@R with cosine similarity.

    Args:
      embeddings: (N, D) one vector per token.
      labels: N word labels.
    Returns:
      mean AP@R over tokens with at least one other token of the same word (nan if none).
    """
    _, y = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    y = torch.as_tensor(y, device=embeddings.device)
    e = torch.nn.functional.normalize(embeddings.double(), dim=1)
    r = torch.bincount(y)[y] - 1  # (N,) other tokens of the same word
    ap = []
    for s in range(0, e.shape[0], chunk_size):
        rows = torch.arange(s, min(s + chunk_size, e.shape[0]), device=e.device)
        rq = r[rows]
        if int(rq.max()) == 0:
            continue
        sim = e[rows] @ e.T
        sim[torch.arange(len(rows)), rows] = -float("inf")  # never retrieve the query itself
        kmax = int(rq.max())
        order = sim.argsort(dim=1, descending=True, stable=True)[:, :kmax]
        rel = (y[order] == y[rows, None]).double()  # (n, kmax)
        i = torch.arange(1, kmax + 1, device=e.device, dtype=torch.float64)
        in_r = i[None, :] <= rq[:, None]  # only the top R of each query count
        prec = (rel * in_r).cumsum(1) / i
        score = (prec * rel * in_r).sum(1) / rq.clamp(min=1)
        ap.append(score[rq > 0])
    return torch.cat(ap).mean().item() if ap else float("nan")


def word_embeddings(
    features: Mapping[str, Union[torch.Tensor, np.ndarray]],
    word_alignments: Alignment,
    frame_rate: float,
    ignore: Iterable[str] = SILENCES,
) -> Tuple[torch.Tensor, List[str]]:
    """Mean-pool the frames of every word token.

    Args:
      features: utt -> (T, D) frames at ``frame_rate`` Hz.
      word_alignments: utt -> [(start_s, end_s, word)]; words in ``ignore`` and tokens
        shorter than one frame are skipped.
    Returns:
      ((N, D) float32 embeddings, N words).
    """
    ignore = set(ignore)
    embs, words = [], []
    for utt, segs in word_alignments.items():
        x = torch.as_tensor(features[utt])
        for on, off, w in segs:
            if w in ignore:
                continue
            s, e = segment_frames(on, off, frame_rate)
            e = min(e, x.shape[0])
            if e > s:
                embs.append(x[s:e].float().mean(0))
                words.append(w)
    if not embs:
        raise ValueError("no word tokens")
    return torch.stack(embs), words


def word_map_at_r(
    features: Mapping[str, Union[torch.Tensor, np.ndarray]],
    word_alignments: Alignment,
    frame_rate: float,
    ignore: Iterable[str] = SILENCES,
) -> float:
    """MAP@R of mean-pooled word tokens over a corpus (see the module docstring)."""
    emb, words = word_embeddings(features, word_alignments, frame_rate, ignore)
    return map_at_r(emb, words)
