"""Frames for kNN-VC: 80-dim fbank (100 Hz) or one layer of any model ``load_model`` reads.

    fx = FeatureExtractor("fbank")                                   # (T, 80) at 100 Hz
    fx = FeatureExtractor("zipformer/exp-pretrain/epoch-2.pt", layer=3)  # (T, D) at its rate
    feats = fx(wav)                                                  # wav: (N,) 16 kHz float

``hop_length`` (samples per frame) is what the vocoder upsamples by; for a model it is measured
once (frames of 1 s and 2 s of silence), so any front end and subsampling is handled alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

SAMPLE_RATE = 16000


class FeatureExtractor:
    """``wav (N,) float at 16 kHz -> (T, D)`` frames; ``hop_length``, ``dim`` and ``name`` say what.

    Args:
      source: ``"fbank"``, or a checkpoint (any kind ``icefall.models.load_feature_model`` reads).
      layer: for a checkpoint: 0 = front end, 1..L = encoder layers (required).
    """

    def __init__(self, source: Union[str, Path] = "fbank", layer: Optional[int] = None, device: str = "cpu"):
        from icefall.data.features import make_fbank_extractor

        self.device = device
        self._fbank = make_fbank_extractor()
        self.model = None
        if str(source) == "fbank":
            self.name = "fbank"
        else:
            from icefall.models import load_feature_model

            if layer is None:
                raise ValueError(f"{source}: give the layer to take features from (0 = front end, 1..L)")
            self.model, config = load_feature_model(source, device=device)
            self.input_type = config.input_type
            self.layer = layer
            self.name = f"{config.encoder.name}:{Path(source).name}:layer{layer}"
        one, two = self(torch.zeros(SAMPLE_RATE)), self(torch.zeros(2 * SAMPLE_RATE))
        self.hop_length = int(round(SAMPLE_RATE / (two.shape[0] - one.shape[0])))
        self.dim = one.shape[1]

    def fbank(self, wav: Tensor) -> Tensor:
        """(N,) -> (T, 80) lhotse fbank at 100 Hz (the corpora's features)."""
        return torch.from_numpy(self._fbank.extract(wav.float().cpu().numpy(), SAMPLE_RATE)).float()

    @torch.no_grad()
    def __call__(self, wav: Tensor) -> Tensor:
        if wav.dim() != 1:
            raise ValueError(f"FeatureExtractor: expected a mono waveform (N,), got {tuple(wav.shape)}")
        if self.model is None:
            return self.fbank(wav)
        x = self.fbank(wav) if self.input_type == "fbank" else wav.float()
        x = x.to(self.device).unsqueeze(0)
        feats, lens = self.model.extract_features(x, torch.tensor([x.shape[1]], device=self.device), layers=[self.layer])
        return feats[0][0, : int(lens[0])].float().cpu()

    def describe(self) -> dict:
        return {"features": self.name, "dim": self.dim, "hop_length": self.hop_length}
