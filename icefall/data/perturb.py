"""Vocal tract length perturbation (VTLP; Jaitly & Hinton 2013) of stored log-mel filter banks:
a new voice per training utterance, without re-reading audio.

The spectrum's frequency axis is scaled by ``alpha`` (formants move by that factor, as between
a longer and a shorter vocal tract). Output bin k takes the log energy at Hz ``f_k / alpha`` of
the input, read by linear interpolation between the input bins on the mel scale; above a
boundary the map bends (Kaldi's VTLN rule) so that the top of the band maps to itself. The
number of frames is unchanged, so CTC/transducer targets stay feasible.

Draws come from the torch RNG of the process that builds the batch: with ``--num-workers 0``
that is the trainer's, whose state a checkpoint saves, so a resumed run draws the same factors;
data loader workers are seeded by lhotse's worker init, as for SpecAugment.
"""
from __future__ import annotations

import torch

from icefall.data.features import NUM_MEL_BINS


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def _inverse_mel(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * torch.expm1(mel / 1127.0)


class Vtlp:
    """Per-utterance VTLP of fbank features: ``alpha`` uniform in ``[1 - max_warp, 1 + max_warp]``.

    Args:
      max_warp: the largest relative change of formant frequencies (e.g. 0.1).
      low_hz, high_hz, num_bins: the filter bank's band and size (lhotse's Fbank defaults:
        20 Hz to 16 kHz / 2 - 400 Hz, 80 bins).
      boundary_hz: where the warp bends to keep ``high_hz`` fixed.
    """

    def __init__(self, max_warp: float = 0.1, low_hz: float = 20.0, high_hz: float = 7600.0,
                 num_bins: int = NUM_MEL_BINS, boundary_hz: float = 4800.0) -> None:
        if not 0 < max_warp < 0.5:
            raise ValueError(f"VTLP's max_warp is a fraction in (0, 0.5), not {max_warp}")
        self.max_warp = max_warp
        self.low_hz, self.high_hz, self.boundary_hz = low_hz, high_hz, boundary_hz
        mel_low, mel_high = _mel(torch.tensor(low_hz)), _mel(torch.tensor(high_hz))
        step = (mel_high - mel_low) / (num_bins + 1)
        self._mel_low, self._mel_step = float(mel_low), float(step)
        # centre frequency of each triangular filter (Hz), float64 for an exact identity map
        self.centers_hz = _inverse_mel(mel_low.double() + step.double() * torch.arange(1, num_bins + 1))

    def warp_hz(self, hz: torch.Tensor, alpha: float) -> torch.Tensor:
        """Input frequency read by output frequency ``hz`` for factor ``alpha``: ``hz / alpha``
        below the boundary, then a straight line to ``high_hz -> high_hz``."""
        lo, hi = self.low_hz, self.high_hz
        b = self.boundary_hz * min(alpha, 1.0)  # bend early enough that hz / alpha stays < hi
        at_b = b / alpha
        upper = at_b + (hz - b) * (hi - at_b) / (hi - b)
        return torch.where(hz <= b, hz / alpha, upper).clamp(lo, hi)

    def warp(self, feats: torch.Tensor, alpha: float) -> torch.Tensor:
        """(T, F) log-mel -> (T, F) with formants scaled by ``alpha``."""
        src = self.warp_hz(self.centers_hz, alpha)
        pos = (_mel(src) - self._mel_low) / self._mel_step - 1.0   # fractional input bin
        pos = pos.clamp(0, feats.shape[1] - 1).to(feats.dtype)
        left = pos.floor().long().clamp(max=feats.shape[1] - 2)
        frac = pos - left
        return feats[:, left] * (1 - frac) + feats[:, left + 1] * frac

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """(T, F) log-mel of one utterance -> (T, F) warped by a new draw of ``alpha``."""
        return self.warp(feats, 1.0 + self.max_warp * (2 * float(torch.rand(())) - 1))
