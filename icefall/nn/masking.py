"""Span masks for masked prediction (wav2vec 2.0 / HuBERT "static" masks).

For an utterance of ``n`` valid frames the number of spans is
``k = max(min_masks, int(mask_prob * n / mask_length + u))`` with ``u ~ U[0, 1)``
(so ``k`` is ``mask_prob * n / mask_length`` rounded up or down at random, unbiased).
The ``k`` start frames are drawn uniformly *without replacement* among the positions where a
whole span fits in the valid part, and each start masks ``mask_length`` frames. Distinct starts
may still give overlapping spans, so the masked fraction is below ``mask_prob`` (fairseq's
``compute_mask_indices`` with ``mask_type="static"`` and ``no_overlap=False`` behaves the same).

Everything is vectorised over the batch; randomness comes from an optional ``torch.Generator``.
"""
from typing import Optional

import torch


def _num_spans(
    lengths: torch.Tensor,
    mask_prob: float,
    mask_length: int,
    min_masks: int,
    generator: Optional[torch.Generator],
) -> torch.Tensor:
    """Random number of spans per utterance, (B,) int64, capped by the number of start positions."""
    u = torch.rand(lengths.shape, generator=generator, device=lengths.device)
    k = (mask_prob * lengths.double() / mask_length + u.double()).floor().long()
    k = k.clamp(min=min_masks)
    span = lengths.clamp(max=mask_length)  # short utterances get shorter spans
    num_starts = torch.where(lengths > 0, lengths - span + 1, 0)
    return torch.minimum(k, num_starts)


def sample_span_starts(
    shape: tuple,
    lengths: torch.Tensor,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 2,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Start frames of the masked spans.

    Args:
      shape: (B, T).
      lengths: (B,) number of valid frames per utterance (<= T).
    Returns:
      BoolTensor (B, T), True at each span start. Starts of utterance b lie in
      ``[0, lengths[b] - min(mask_length, lengths[b])]`` and are distinct.
    """
    B, T = shape
    lengths = lengths.to(torch.long)
    device = lengths.device
    k = _num_spans(lengths, mask_prob, mask_length, min_masks, generator)
    span = lengths.clamp(max=mask_length)
    last_start = lengths - span  # inclusive
    # Random keys; invalid start positions get key 2 (> any uniform key), so the k smallest keys
    # of a row are k distinct valid starts drawn uniformly without replacement.
    keys = torch.rand((B, T), generator=generator, device=device)
    pos = torch.arange(T, device=device)
    keys = keys.masked_fill(pos[None, :] > last_start[:, None], 2.0)
    kmax = int(k.max()) if B > 0 else 0
    idx = keys.topk(kmax, dim=1, largest=False).indices  # (B, kmax), distinct per row
    keep = torch.arange(kmax, device=device)[None, :] < k[:, None]
    return torch.zeros((B, T), dtype=torch.bool, device=device).scatter_(1, idx, keep)


def spans_from_starts(starts: torch.Tensor, lengths: torch.Tensor, mask_length: int) -> torch.Tensor:
    """Extend each start to a span of ``min(mask_length, length)`` frames.

    Args:
      starts: BoolTensor (B, T).
      lengths: (B,) valid frames.
    Returns:
      BoolTensor (B, T).
    """
    B, T = starts.shape
    lengths = lengths.to(torch.long)
    span = lengths.clamp(max=mask_length)
    # Frame t is masked iff a start lies in (t - span, t]: a difference of cumulative sums.
    c = torch.nn.functional.pad(starts.long().cumsum(dim=1), (1, 0))  # c[:, t+1] = #starts <= t
    t = torch.arange(T, device=starts.device)
    lo = (t[None, :] + 1 - span[:, None]).clamp(min=0)  # c index of first allowed start
    covered = c[:, 1:] - c.gather(1, lo)
    return covered > 0


def compute_mask(
    shape: tuple,
    lengths: torch.Tensor,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 2,
    allow_overlap: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Time mask for masked prediction.

    Args:
      shape: (B, T) of the frame sequence to mask.
      lengths: (B,) number of valid (non-padding) frames; padding is never masked.
      mask_prob: expected fraction of frames chosen as span starts times ``mask_length``
        (HuBERT/wav2vec 2.0: 0.65 or 0.8).
      mask_length: span length in frames (10).
      min_masks: minimum number of spans per utterance (fairseq's default 2).
      allow_overlap: must be True; non-overlapping spans (fairseq ``no_overlap=True``) are not
        implemented because no recipe here uses them.
      generator: optional torch.Generator for reproducible masks (on ``lengths.device``).
    Returns:
      BoolTensor (B, T), True at masked frames.
    """
    if not allow_overlap:
        raise NotImplementedError("only overlapping static spans (fairseq default) are supported")
    lengths = lengths.to(torch.long)
    starts = sample_span_starts(shape, lengths, mask_prob, mask_length, min_masks, generator)
    return spans_from_starts(starts, lengths, mask_length)


def compute_channel_mask(
    batch_size: int,
    num_channels: int,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    generator: Optional[torch.Generator] = None,
    device: torch.device = torch.device("cpu"),
) -> torch.Tensor:
    """Feature-channel mask (wav2vec 2.0 ``mask_channel_*``): the same span logic over channels.

    Returns:
      BoolTensor (B, C); broadcast it over time, e.g. ``x.masked_fill(mask[:, None, :], 0)``
      for x of shape (B, T, C).
    """
    lengths = torch.full((batch_size,), num_channels, dtype=torch.long, device=device)
    return compute_mask((batch_size, num_channels), lengths, mask_prob, mask_length, min_masks, generator=generator)
