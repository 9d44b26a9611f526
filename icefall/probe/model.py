"""SUPERB's featurizer (a learnable softmax-weighted sum of the frozen layers) and small heads.

A probe sees ``layers`` (L, B, T, D) and ``lens`` (B,):

- frame level (PR, ASR): ``FrameHead`` gives (B, T, V+1) CTC logits, blank = 0;
- utterance level (SID, ASV, KS, rate): ``UtteranceHead`` pools over valid frames and classifies;
  ``embed`` gives the penultimate vector (ASV scores these by cosine).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icefall.utils import make_pad_mask


class WeightedSum(nn.Module):
    """``sum_l softmax(w)_l * layer_l``; ``w`` starts at zero (the plain mean). ``layer_norm``:
    each layer is first normalised over its feature axis without affine parameters (s3prl's
    ``layer_norm`` option)."""

    def __init__(self, num_layers: int, layer_norm: bool = False):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.layer_norm = layer_norm

    def forward(self, layers: Tensor) -> Tensor:
        """(L, B, T, D) -> (B, T, D)."""
        if layers.shape[0] != self.weights.numel():
            raise ValueError(f"{layers.shape[0]} layers given, the weighted sum has {self.weights.numel()}")
        if self.layer_norm:
            layers = F.layer_norm(layers, layers.shape[-1:])
        w = F.softmax(self.weights, dim=0)
        return (w.view(-1, *([1] * (layers.dim() - 1))) * layers).sum(0)


def masked_mean_std(x: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
    """Mean and standard deviation over the valid frames: x (B, T, D) -> two (B, D)."""
    valid = (~make_pad_mask(lens, x.shape[1])).unsqueeze(-1).to(x.dtype)
    n = lens.clamp(min=1).unsqueeze(-1).to(x.dtype)
    mean = (x * valid).sum(1) / n
    var = (((x - mean.unsqueeze(1)) ** 2) * valid).sum(1) / n
    return mean, (var + 1e-5).sqrt()


class FrameHead(nn.Module):
    """Per-frame CTC logits: a linear layer (``hidden=0``) or Linear-ReLU-Linear."""

    def __init__(self, in_dim: int, num_outputs: int, hidden: int = 256):
        super().__init__()
        self.net = (nn.Linear(in_dim, num_outputs) if hidden == 0 else
                    nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)))

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, num_outputs)."""
        return self.net(x)


class UtteranceHead(nn.Module):
    """Utterance classification: ``"mean"`` (mean pooling + linear; the embedding is the pooled
    features) or ``"xvector"`` (frame layer, mean+std pooling, an ``hidden``-dim embedding layer,
    linear: a light x-vector)."""

    def __init__(self, in_dim: int, num_classes: int, kind: str = "mean", hidden: int = 256):
        super().__init__()
        if kind not in ("mean", "xvector"):
            raise ValueError(f"utterance head {kind!r}: expected 'mean' or 'xvector'")
        self.kind = kind
        if kind == "xvector":
            self.frame = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
            self.segment = nn.Linear(2 * hidden, hidden)
            in_dim = hidden
        self.classifier = nn.Linear(in_dim, num_classes)

    def embed(self, x: Tensor, lens: Tensor) -> Tensor:
        """(B, T, D) -> (B, E): the input of the classifier."""
        if self.kind == "mean":
            return masked_mean_std(x, lens)[0]
        mean, std = masked_mean_std(self.frame(x), lens)
        return self.segment(torch.cat([mean, std], dim=-1))

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        """(B, T, D) -> (B, num_classes) logits."""
        e = self.embed(x, lens)
        return self.classifier(F.relu(e) if self.kind == "xvector" else e)


class Probe(nn.Module):
    """Weighted layer sum + a head: ``(layers (L, B, T, D), lens (B,)) -> head output``."""

    def __init__(self, num_layers: int, head: nn.Module, layer_norm: bool = False):
        super().__init__()
        self.featurizer = WeightedSum(num_layers, layer_norm)
        self.head = head

    def forward(self, layers: Tensor, lens: Tensor) -> Tensor:
        return self.head(self.featurizer(layers), lens)

    def embed(self, layers: Tensor, lens: Tensor) -> Tensor:
        return self.head.embed(self.featurizer(layers), lens)

    def layer_weights(self) -> Tensor:
        """The softmax layer weights (L,) (what the report plots)."""
        return F.softmax(self.featurizer.weights.detach(), dim=0)
