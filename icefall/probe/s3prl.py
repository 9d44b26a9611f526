"""An s3prl-style upstream over any of our checkpoints, so that s3prl's downstream tasks can
probe them (``run_downstream.py -u custom`` with this class as the expert; docs/probing.md).

    up = Upstream("zipformer/exp-pretrain/epoch-2.pt")          # or "fbank"
    out = up([torch.randn(16000), torch.randn(12000)])           # list of (N_i,) 16 kHz waves
    out["hidden_states"]      # list of (B, T, D) tensors, all the same shape, zero-padded in time
    up.get_downsample_rates("hidden_states")                    # input samples per frame

The contract of s3prl's ``UpstreamExpert``: ``forward(wavs: List[Tensor]) -> dict`` whose
``hidden_states`` is a list of equally shaped (B, T, D) tensors (the featurizer stacks them),
padded after each utterance's ``round(len / downsample_rate)`` frames (s3prl tolerates a
difference of a few frames). Layers of different widths are zero-padded to the widest.
"""
from __future__ import annotations

from typing import Dict, List, Union

import torch
from torch import Tensor, nn

from icefall.probe.upstream import SAMPLE_RATE, load_upstream


class Upstream(nn.Module):
    """s3prl's upstream expert interface around a frozen upstream (``ckpt``: "fbank" or a
    checkpoint path; ``model_config`` is unused: the checkpoint holds the config)."""

    def __init__(self, ckpt: str = "fbank", model_config: str = None, device: str = "cpu", **kwargs):
        super().__init__()
        self.upstream = load_upstream(ckpt, device)
        if self.upstream.model is not None:
            self.model = self.upstream.model

    def get_downsample_rates(self, key: str) -> int:
        """Input samples per output frame (the same for every key)."""
        return round(SAMPLE_RATE / self.upstream.frame_rate)

    @torch.no_grad()
    def forward(self, wavs: List[Tensor]) -> Dict[str, Union[Tensor, List[Tensor]]]:
        device = wavs[0].device
        sources = [self.upstream.waveform_source(w.cpu()) for w in wavs]
        lens = torch.tensor([s.shape[0] for s in sources])
        layers, _ = self.upstream(torch.nn.utils.rnn.pad_sequence(sources, batch_first=True), lens)
        hidden = [x.to(device) for x in layers]
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
