"""Transducer decoding: batched greedy search and modified beam search.

Both emit at most one symbol per frame (the "modified" topology), as
icefall's ``greedy_search_batch`` and ``modified_beam_search``.  The decoder
context starts as ``[-1] * (context_size - 1) + [blank]`` (``-1`` embeds to
zero), matching how the decoder is fed during training.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
from torch import Tensor


def _initial_context(context_size: int, blank_id: int) -> List[int]:
    return [-1] * (context_size - 1) + [blank_id]


def _decode_context(model, contexts: Tensor) -> Tensor:
    """(N, context_size) token ids -> projected decoder output (N, joiner_dim)."""
    out = model.decoder(contexts, need_pad=False)  # (N, 1, decoder_dim)
    return model.joiner.decoder_proj(out.squeeze(1))


@torch.no_grad()
def greedy_search_batch(model, encoder_out: Tensor, encoder_out_lens: Tensor) -> List[List[int]]:
    """Best symbol (or blank) on each frame, all utterances at once.

    Args:
      model: has ``decoder`` (:class:`Decoder`) and ``joiner`` (:class:`Joiner`).
      encoder_out: (B, T, encoder_dim); encoder_out_lens: (B,).
    Returns: B lists of token ids.
    """
    B, T, _ = encoder_out.shape
    blank, context_size = model.decoder.blank_id, model.decoder.context_size
    enc = model.joiner.encoder_proj(encoder_out)  # (B, T, joiner_dim)
    contexts = torch.tensor([_initial_context(context_size, blank)] * B, device=enc.device)
    dec = _decode_context(model, contexts)
    hyps: List[List[int]] = [[] for _ in range(B)]
    lens = encoder_out_lens.to(enc.device)
    for t in range(T):
        logits = model.joiner(enc[:, t], dec, project_input=False)  # (B, V)
        best = logits.argmax(dim=-1)
        emitted = (best != blank) & (lens > t)
        if not bool(emitted.any()):
            continue
        for b in emitted.nonzero().flatten().tolist():
            hyps[b].append(int(best[b]))
        shifted = torch.cat([contexts[:, 1:], best.unsqueeze(1)], dim=1)
        contexts = torch.where(emitted.unsqueeze(1), shifted, contexts)
        dec = torch.where(emitted.unsqueeze(1), _decode_context(model, contexts), dec)
    return hyps


@torch.no_grad()
def modified_beam_search(
    model, encoder_out: Tensor, encoder_out_lens: Tensor, beam: int = 4,
    lm=None, lm_weight: float = 0.0,
) -> List[List[int]]:
    """Beam search with at most one symbol per frame, optionally with LM shallow fusion.

    On every frame each hypothesis is extended by blank (unchanged tokens) or
    one symbol; the ``beam`` best extensions are kept, and extensions with the
    same tokens are merged (their probabilities added).  The decoder and
    joiner run once per frame on all hypotheses of all active utterances.

    Shallow fusion (``lm``, e.g. :class:`icefall.asr.lm_decode.TokenNgramLM`): hypotheses are
    ranked by transducer log-prob + ``lm_weight`` * LM log10-prob of their tokens, where
    ``lm.log10_probs(tokens) -> (V,)`` scores every next token (0 for blank). Merged
    hypotheses share their tokens, hence their LM score.

    Args: as :func:`greedy_search_batch`; beam: hypotheses kept per utterance.
    Returns: B lists of token ids, the hypothesis with the best (fused) log-prob
      per token (length normalised over tokens + initial context, as icefall).
    """
    B, T, _ = encoder_out.shape
    blank, context_size = model.decoder.blank_id, model.decoder.context_size
    enc = model.joiner.encoder_proj(encoder_out)
    lens = encoder_out_lens.tolist()
    start = tuple(_initial_context(context_size, blank))
    # per utterance: tokens (with the initial context) -> transducer log-prob, LM log10-prob
    beams: List[Dict[Tuple[int, ...], float]] = [{start: 0.0} for _ in range(B)]
    lm_scores: List[Dict[Tuple[int, ...], float]] = [{start: 0.0} for _ in range(B)]
    # decoder output of each context seen: most extensions are blanks, which keep the context
    dec_cache: Dict[Tuple[int, ...], Tensor] = {}
    for t in range(T):
        active = [b for b in range(B) if lens[b] > t]
        if not active:
            break
        keys = [(b, ys) for b in active for ys in beams[b]]
        contexts = [ys[-context_size:] for _, ys in keys]
        new_contexts = list(dict.fromkeys(c for c in contexts if c not in dec_cache))
        if new_contexts:
            outs = _decode_context(model, torch.tensor(new_contexts, device=enc.device))
            dec_cache.update(zip(new_contexts, outs))
        dec = torch.stack([dec_cache[c] for c in contexts])
        enc_t = enc[torch.tensor([b for b, _ in keys], device=enc.device), t]
        log_probs = model.joiner(enc_t, dec, project_input=False).log_softmax(dim=-1)
        log_probs += torch.tensor([beams[b][ys] for b, ys in keys], device=enc.device).unsqueeze(1)
        rank, lm_next = log_probs, None
        if lm is not None:
            lm_next = torch.stack([lm.log10_probs(ys[context_size:]) for _, ys in keys]).to(enc.device)
            lm_next += torch.tensor([lm_scores[b][ys] for b, ys in keys], device=enc.device).unsqueeze(1)
            rank = log_probs + lm_weight * lm_next
        V = log_probs.shape[1]
        row = 0
        for b in active:  # best (hypothesis, output) pairs of each utterance
            n = len(beams[b])
            top = rank[row : row + n].flatten().topk(min(beam, n * V))
            new: Dict[Tuple[int, ...], float] = {}
            new_lm: Dict[Tuple[int, ...], float] = {}
            for idx in top.indices.tolist():
                h, tok = row + idx // V, idx % V
                score, ys = log_probs[h, tok].item(), keys[h][1]
                ys = ys if tok == blank else ys + (tok,)
                new[ys] = score if ys not in new else _logadd(new[ys], score)
                new_lm[ys] = 0.0 if lm_next is None else lm_next[h, tok].item()
            beams[b], lm_scores[b] = new, new_lm
            row += n
    results = []
    for b in range(B):
        fused = {ys: am + lm_weight * lm_scores[b][ys] for ys, am in beams[b].items()}
        ys = max(fused, key=lambda k: fused[k] / len(k))
        results.append(list(ys[context_size:]))
    return results


def _logadd(a: float, b: float) -> float:
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))
