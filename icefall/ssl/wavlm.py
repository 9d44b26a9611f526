"""WavLM (Chen et al., 2022): HuBERT's masked prediction of the k-means labels of a *clean*
utterance from a noisy input, the noise being other speakers of the batch (utterance mixing),
and, with the Transformer encoder, gated relative position bias.

    source ─ utterance mixing (training only) ─ HubertModel (mask, encode, predict the primary's labels)

Utterance mixing (:func:`mix_utterances`), for each utterance i of a batch of B >= 2: with
probability ``mix_prob`` (0.2), pick another utterance j of the batch, a segment length L uniform
in ``1..floor(mix_max_fraction * n_i)`` (at most half the primary's n_i valid units, and at most
n_j), a segment of j at a uniform offset and a uniform position in i, and an energy ratio r
uniform in ``[-mix_max_db, mix_max_db]`` dB (5 dB); the segment is scaled so that

    10 log10(mean power of i's valid units / mean power of the scaled segment) = r

and added to i. The labels stay i's: the model must predict the primary speaker's content.
Mixing happens on what the batch holds:

- waveform (B, N) (CNN front end): samples add; power is the squared sample;
- fbank (B, T, 80) log-mel (fbank front end): mixed in the linear mel power domain,
  ``log(exp(x_i) + g * exp(x_j))``, power being ``exp`` of a log-mel bin. This is what mixing
  the waveforms would give when the two signals' spectra do not interfere (their cross terms
  average out); the data pipeline stores fbank, so no waveform is at hand.

The draws come from torch's global generator (seeded per epoch by the trainer and stored in
checkpoints, so resuming is exact). Validation batches (eval mode) are not mixed. Each batch
reports ``mixed`` (utterances mixed) and ``mix_db`` (the sum of their sampled ratios); the
training log shows the fraction mixed and the mean ratio.

Gated relative position bias is an encoder option (``gated_rel_pos_bias``, Transformer only:
:class:`icefall.nn.transformer.MultiheadSelfAttention`); ``--method wavlm`` turns it on for a
Transformer encoder unless ``--encoder-overrides gated_rel_pos_bias=False``. A Zipformer has its
own relative positional encoding and gets utterance mixing only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from icefall.models import Objective
from icefall.nn.configs import EncoderConfig
from icefall.ssl.hubert import HubertConfig, HubertModel, _opt


@dataclass(frozen=True)
class WavlmConfig(HubertConfig):
    """HuBERT's masked prediction (every :class:`HubertConfig` field) plus utterance mixing."""

    mix_prob: float = _opt(0.2, "wavlm: probability that an utterance gets another one's segment")
    mix_max_fraction: float = _opt(0.5, "wavlm: longest mixed segment, as a fraction of the primary")
    mix_max_db: float = _opt(5.0, "wavlm: energy ratio primary/interference uniform in +-this (dB)")


@dataclass
class MixPlan:
    """What :func:`mix_utterances` did to a batch of B utterances, one entry each (lengths and
    offsets in input units: samples or fbank frames).

    mixed: (B,) bool; partner: (B,) the utterance whose segment was added; length: (B,) segment
    length; start: (B,) where it starts in the primary; partner_start: (B,) where it was cut from
    the partner; ratio_db: (B,) the sampled energy ratio primary/interference. Entries where
    ``mixed`` is False were drawn but not used.
    """

    mixed: torch.Tensor
    partner: torch.Tensor
    length: torch.Tensor
    start: torch.Tensor
    partner_start: torch.Tensor
    ratio_db: torch.Tensor


def sample_mix_plan(lens: torch.Tensor, prob: float = 0.2, max_fraction: float = 0.5,
                    max_db: float = 5.0, generator: Optional[torch.Generator] = None) -> MixPlan:
    """Draw the mixing of a batch with valid lengths ``lens`` (B,) (see the module docstring).

    Every utterance takes the same six uniform draws whether it is mixed or not, so the number
    of draws (and hence the rest of the run's randomness) does not depend on the outcome.
    """
    lens = lens.detach().to("cpu", torch.long)
    B = lens.numel()
    u = torch.rand(6, B, generator=generator, dtype=torch.float64)
    # partner: uniform over the B - 1 others
    partner = (torch.arange(B) + 1 + (u[1] * max(B - 1, 1)).long().clamp(max=max(B - 2, 0))) % max(B, 1)
    longest = torch.minimum((lens.double() * max_fraction).floor().long(), lens[partner])
    length = 1 + (u[2] * longest.clamp(min=1)).long().clamp(max=longest.clamp(min=1) - 1)
    start = (u[3] * (lens - length + 1).clamp(min=1)).long()
    partner_start = (u[4] * (lens[partner] - length + 1).clamp(min=1)).long()
    ratio_db = (2.0 * u[5] - 1.0) * max_db
    mixed = (u[0] < prob) & (longest >= 1) & (B >= 2)
    return MixPlan(mixed, partner, length, start, partner_start, ratio_db)


def mix_utterances(source: torch.Tensor, lens: torch.Tensor, plan: MixPlan) -> Tuple[torch.Tensor, MixPlan]:
    """Apply ``plan`` to a batch.

    Args:
      source: (B, N) waveform, or (B, T, F) log-mel fbank (mixed in linear power).
      lens: (B,) valid samples/frames.
      plan: from :func:`sample_mix_plan`.
    Returns:
      the mixed batch (a new tensor; padding untouched), and the plan with ``mixed`` cleared
      where the partner's segment is silent (no scale reaches the ratio).
    """
    if source.dim() not in (2, 3):
        raise ValueError(f"utterance mixing needs (B, N) waveform or (B, T, F) fbank, got {tuple(source.shape)}")
    log_mel = source.dim() == 3
    out = source.clone()
    mixed = plan.mixed.clone()
    for i in plan.mixed.nonzero().flatten().tolist():
        j, L = int(plan.partner[i]), int(plan.length[i])
        s, sj = int(plan.start[i]), int(plan.partner_start[i])
        primary = source[i, : int(lens[i])].float()
        segment = source[j, sj: sj + L].float()
        shift = float(plan.ratio_db[i]) * math.log(10.0) / 10.0  # the ratio as a natural log
        if log_mel:  # log mean power = logsumexp - log(count)
            log_p = torch.logsumexp(primary.flatten(), 0) - math.log(primary.numel())
            log_q = torch.logsumexp(segment.flatten(), 0) - math.log(segment.numel())
            scaled = segment + (log_p - log_q - shift)  # log(g * exp(segment))
            out[i, s: s + L] = torch.logaddexp(out[i, s: s + L].float(), scaled).to(out.dtype)
            continue
        p, q = primary.pow(2).mean(), segment.pow(2).mean()
        if not bool(q > 1e-12 * p.clamp(min=1e-30)):  # a silent segment: nothing to add
            mixed[i] = False
            continue
        scale = torch.sqrt(p / q * math.exp(-shift))
        out[i, s: s + L] += (scale * segment).to(out.dtype)
    return out, MixPlan(mixed, plan.partner, plan.length, plan.start, plan.partner_start, plan.ratio_db)


class WavlmModel(HubertModel):
    """:class:`HubertModel` whose training batches are utterance-mixed first (labels unchanged)."""

    cfg: WavlmConfig

    def forward(self, source: torch.Tensor, source_lens: torch.Tensor,
                labels: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """As :meth:`HubertModel.forward`; in training the stats add ``mixed`` (utterances
        mixed) and ``mix_db`` (the sum of their energy ratios, dB)."""
        mix: Dict[str, float] = {}
        if self.training and self.cfg.mix_prob > 0:
            plan = sample_mix_plan(source_lens, self.cfg.mix_prob, self.cfg.mix_max_fraction, self.cfg.mix_max_db)
            source, plan = mix_utterances(source, source_lens, plan)
            mix = {"mixed": float(plan.mixed.sum()), "mix_db": float(plan.ratio_db[plan.mixed].sum())}
        loss, stats = super().forward(source, source_lens, labels)
        stats.update(mix)
        return loss, stats


def wavlm_encoder_defaults(enc: EncoderConfig, cfg: WavlmConfig) -> Dict[str, Any]:
    """WavLM's Transformer has gated relative position bias; a Zipformer keeps its own
    relative positional encoding."""
    return {"gated_rel_pos_bias": True} if enc.encoder.kind == "transformer" else {}


def _build_wavlm(speech: nn.Module, cfg: WavlmConfig) -> WavlmModel:
    return WavlmModel(speech.frontend, speech.encoder, cfg)


#: The ``--method wavlm`` registration (icefall.models.OBJECTIVES).
WAVLM = Objective("wavlm", WavlmConfig, _build_wavlm, needs_labels=True, resizable=("label_embs_concat",),
                  encoder_defaults=wavlm_encoder_defaults)
