"""The HEAR benchmark's upstream API (module-level functions, as its validator imports them).

    from icefall.probe import hear
    model = hear.load_model("zipformer/exp-pretrain/epoch-2.pt")   # or "fbank"
    emb, ts = hear.get_timestamp_embeddings(audio, model)   # audio (n_sounds, n_samples), 16 kHz
    scene = hear.get_scene_embeddings(audio, model)          # (n_sounds, scene_embedding_size)

Embeddings are one layer of ``extract_features`` (``layer``, default the last); timestamps are
the centres of its frames in milliseconds ((t + 0.5) / frame_rate * 1000). Scene embeddings
are the mean of the timestamp embeddings over time.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from icefall.probe.upstream import SAMPLE_RATE, Upstream, load_upstream


class HearModel(nn.Module):
    """What :func:`load_model` returns: ``sample_rate``, ``scene_embedding_size``,
    ``timestamp_embedding_size`` (HEAR's required attributes) around a frozen upstream."""

    sample_rate = SAMPLE_RATE

    def __init__(self, upstream: Upstream, layer: int = -1):
        super().__init__()
        self.upstream = upstream
        if upstream.model is not None:
            self.model = upstream.model  # registered, so .to(device) moves it
        self.layer = layer
        probe = torch.zeros(SAMPLE_RATE)
        dim = self.layer_features(probe.unsqueeze(0))[0].shape[-1]
        self.scene_embedding_size = self.timestamp_embedding_size = dim

    @torch.no_grad()
    def layer_features(self, audio: Tensor) -> Tuple[Tensor, Tensor]:
        """(n, samples) -> ((n, T, D) features of ``layer``, (n,) valid frames)."""
        sources = [self.upstream.waveform_source(a.cpu()) for a in audio]
        lens = torch.tensor([s.shape[0] for s in sources])
        padded = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True)
        layers, out_lens = self.upstream.layers(padded, lens)
        return layers[self.layer].to(audio.device), out_lens


def load_model(model_file_path: str = "fbank", layer: int = -1, device: str = "cpu") -> HearModel:
    """A HEAR model of any checkpoint ``icefall.models.load_model`` reads, or of "fbank"."""
    return HearModel(load_upstream(model_file_path or "fbank", device), layer)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> Tuple[Tensor, Tensor]:
    """``audio`` (n_sounds, n_samples) float in [-1, 1] at ``model.sample_rate`` -> (embeddings
    (n_sounds, n_timestamps, timestamp_embedding_size), timestamps (n_sounds, n_timestamps) in
    ms)."""
    if audio.dim() != 2:
        raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    emb, _ = model.layer_features(audio)
    t = (torch.arange(emb.shape[1], dtype=torch.float32) + 0.5) * 1000.0 / model.upstream.frame_rate
    return emb, t.unsqueeze(0).expand(emb.shape[0], -1).to(emb.device)


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """(n_sounds, n_samples) -> (n_sounds, scene_embedding_size): the mean over time."""
    emb, _ = get_timestamp_embeddings(audio, model)
    return emb.mean(1)
