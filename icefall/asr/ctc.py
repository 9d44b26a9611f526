"""CTC head, loss (torch's ctc_loss) and decoding (greedy, prefix beam search)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

_NEG_INF = float("-inf")


class CtcHead(nn.Module):
    """Encoder output (B, T, D) -> CTC log-probs (B, T, V) (dropout, linear, log-softmax)."""

    def __init__(self, encoder_dim: int, vocab_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(encoder_dim, vocab_size)

    def forward(self, encoder_out: Tensor) -> Tensor:
        return self.output(self.dropout(encoder_out)).log_softmax(dim=-1)


def ctc_loss(
    log_probs: Tensor,
    log_prob_lens: Tensor,
    targets: Sequence[Sequence[int]],
    blank: int = 0,
    reduction: str = "sum",
) -> Tensor:
    """CTC loss of token sequences.

    Args:
      log_probs: (B, T, V) log-softmax outputs.
      log_prob_lens: (B,) valid frames.
      targets: B lists of token ids (no blanks).
      reduction: "sum" (icefall's choice; normalise by frames outside),
        "mean" or "none".
    Returns: scalar, or (B,) for "none"; an impossible alignment gives inf
      (``zero_infinity`` is left off so that bad data is visible).
    """
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.int64)
    target_lens = torch.tensor([len(seq) for seq in targets], dtype=torch.int64)
    # torch wants (T, B, V); lengths on CPU keep the cuDNN/native choice simple.
    return nn.functional.ctc_loss(
        log_probs.transpose(0, 1),
        flat,
        log_prob_lens.cpu(),
        target_lens,
        blank=blank,
        reduction=reduction,
    )


def ctc_greedy_search(log_probs: Tensor, log_prob_lens: Tensor, blank: int = 0) -> List[List[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks.

    Args: log_probs (B, T, V), log_prob_lens (B,).  Returns B token lists.
    """
    best = log_probs.argmax(dim=-1).cpu()
    hyps = []
    for path, n in zip(best.tolist(), log_prob_lens.tolist()):
        path = path[:n]
        hyps.append([tok for i, tok in enumerate(path) if tok != blank and (i == 0 or tok != path[i - 1])])
    return hyps


def _logadd(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def ctc_prefix_beam_search_nbest(
    log_probs: Tensor,
    log_prob_lens: Tensor,
    beam: int = 4,
    blank: int = 0,
    tokens_per_frame: Optional[int] = None,
) -> List[List[Tuple[List[int], float]]]:
    """CTC prefix beam search.

    Each prefix keeps two scores: paths ending in blank and paths ending in
    its last token, so that a repeated token is a new token only after a blank.
    With a beam larger than the number of prefixes it is exact: the scores are
    log p(prefix | x) summed over all alignments.

    Args:
      log_probs: (B, T, V); log_prob_lens: (B,).
      beam: prefixes kept after each frame.
      tokens_per_frame: only extend with this many best tokens of each frame
        (None: all tokens).
    Returns:
      per utterance, up to ``beam`` (tokens, log-prob) pairs, best first.
    """
    results = []
    lp_all = log_probs.detach().float().cpu()
    for lp, n in zip(lp_all, log_prob_lens.tolist()):
        # prefix -> [log p(ends in blank), log p(ends in its last token)]
        prefixes: Dict[Tuple[int, ...], List[float]] = {(): [0.0, _NEG_INF]}
        for t in range(n):
            frame = lp[t]
            if tokens_per_frame is None:
                candidates = [c for c in range(frame.shape[0]) if c != blank]
            else:
                candidates = [c for c in frame.topk(tokens_per_frame).indices.tolist() if c != blank]
            frame = frame.tolist()
            nxt: Dict[Tuple[int, ...], List[float]] = defaultdict(lambda: [_NEG_INF, _NEG_INF])
            for prefix, (p_b, p_nb) in prefixes.items():
                total = _logadd(p_b, p_nb)
                entry = nxt[prefix]
                entry[0] = _logadd(entry[0], total + frame[blank])
                last = prefix[-1] if prefix else None
                for c in candidates:
                    if c == last:
                        # "a a" without blank in between stays "a"
                        entry[1] = _logadd(entry[1], p_nb + frame[c])
                        ext = nxt[prefix + (c,)]
                        ext[1] = _logadd(ext[1], p_b + frame[c])
                    else:
                        ext = nxt[prefix + (c,)]
                        ext[1] = _logadd(ext[1], total + frame[c])
            scored = [(_logadd(*s), p, s) for p, s in nxt.items()]
            scored = sorted((x for x in scored if x[0] > _NEG_INF), key=lambda x: -x[0])
            prefixes = {p: s for _, p, s in scored[:beam]}
        ranked = sorted(((list(p), _logadd(*s)) for p, s in prefixes.items()), key=lambda x: -x[1])
        results.append(ranked)
    return results


def ctc_prefix_beam_search(
    log_probs: Tensor,
    log_prob_lens: Tensor,
    beam: int = 4,
    blank: int = 0,
    tokens_per_frame: Optional[int] = None,
) -> List[List[int]]:
    """Best prefix of :func:`ctc_prefix_beam_search_nbest` for each utterance."""
    nbest = ctc_prefix_beam_search_nbest(log_probs, log_prob_lens, beam, blank, tokens_per_frame)
    return [hyps[0][0] for hyps in nbest]
