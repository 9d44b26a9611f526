"""A frozen upstream for probing: the stored fbank, or every layer of any checkpoint that
:func:`icefall.models.load_model` reads; and its per-split features, cached on disk.

    up = load_upstream("zipformer/exp-pretrain/epoch-2.pt")   # or "fbank"
    feats = split_features(up, cuts, "probe/cache/hubert/dev.pt")   # {cut_id: (L, T, D)}

Layers are those of ``extract_features`` (0 the front end, 1..L the encoder layers). Layers of
different widths (a Zipformer's stacks) are zero-padded to the widest, as Zipformer itself pads
channels between its stacks, so that one weighted sum covers all of them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor

from icefall.checkpoint import atomic_torch_save

SAMPLE_RATE = 16000
FBANK_RATE = 100.0  # stored fbank frames per second (10 ms shift)
MODEL_RATE = 50.0  # SSL encoder frames per second


def stack_layers(layers: Sequence[Tensor]) -> Tensor:
    """Layers (T, D_l) or (B, T, D_l) of one utterance/batch -> one tensor (L, ..., max D_l),
    narrower layers zero-padded on the feature axis."""
    width = max(x.shape[-1] for x in layers)
    return torch.stack([torch.nn.functional.pad(x, (0, width - x.shape[-1])) for x in layers])


class Upstream:
    """A frozen feature extractor.

    Attributes:
      name: what it was loaded from ("fbank" or the checkpoint path).
      frame_rate: output frames per second.
      input_type: "fbank" (80-dim at 100 Hz) or "wav" (16 kHz samples) the model consumes.
    """

    def __init__(self, name: str, model: torch.nn.Module = None, input_type: str = "fbank",
                 device: Union[str, torch.device] = "cpu"):
        self.name = name
        self.model = model
        self.input_type = input_type
        self.device = torch.device(device)
        self.frame_rate = FBANK_RATE if model is None else MODEL_RATE

    @torch.no_grad()
    def layers(self, source: Tensor, lens: Tensor) -> Tuple[List[Tensor], Tensor]:
        """``source`` (B, T, 80) fbank or (B, N) samples with ``lens`` (B,) -> (list of L
        (B, T', D_l) float32 CPU tensors, lens (B,)). For "fbank", one layer: the input itself."""
        if self.model is None:
            return [source.float()], lens
        feats, out_lens = self.model.extract_features(source.to(self.device), lens.to(self.device))
        return [f.float().cpu() for f in feats], out_lens.cpu()

    def __call__(self, source: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
        """As :meth:`layers`, stacked: ((L, B, T', max D_l), lens (B,))."""
        feats, lens = self.layers(source, lens)
        return stack_layers(feats), lens

    def cut_source(self, cut) -> Tensor:
        """The model's input for one cut: (T, 80) stored fbank (computed from the audio where the
        cut stores none) or (N,) samples."""
        if self.input_type == "wav":
            return torch.as_tensor(cut.load_audio()[0], dtype=torch.float32)
        if not cut.has_features:
            return self.waveform_source(torch.as_tensor(cut.load_audio()[0]))
        return torch.as_tensor(cut.load_features(), dtype=torch.float32)

    def waveform_source(self, wav: Tensor) -> Tensor:
        """The model's input for one (N,) 16 kHz waveform: itself, or its (T, 80) fbank."""
        if self.input_type == "wav":
            return wav.float()
        from icefall.data.features import make_fbank_extractor

        if not hasattr(self, "_extractor"):
            self._extractor = make_fbank_extractor()
        return torch.from_numpy(self._extractor.extract(wav.float().cpu().numpy(), SAMPLE_RATE)).float()

    def cut_layers(self, cut) -> Tensor:
        """(L, T, D) features of one cut (valid frames only)."""
        x = self.cut_source(cut)
        layers, lens = self(x.unsqueeze(0), torch.tensor([x.shape[0]]))
        return layers[:, 0, : int(lens[0])].contiguous()


def load_upstream(spec: str, device: Union[str, torch.device] = "cpu") -> Upstream:
    """``"fbank"`` (the cut's stored 80-dim fbank, one layer) or a checkpoint path (every layer
    of :func:`icefall.models.load_feature_model`), frozen and in eval mode."""
    if str(spec) == "fbank":
        return Upstream("fbank")
    from icefall.models import load_feature_model

    if not Path(str(spec).split(":", 1)[-1]).is_file():
        raise FileNotFoundError(f"{spec}: no such checkpoint (give a file load_model reads, or 'fbank')")
    model, config = load_feature_model(spec, device)
    model.requires_grad_(False)
    return Upstream(str(spec), model, config.input_type, device)


def split_features(upstream: Upstream, cuts: Sequence, cache: Union[str, Path, None] = None) -> Dict[str, Tensor]:
    """``{cut_id: (L, T, D) float32}`` for ``cuts``. With ``cache``, read from that file when it
    holds this upstream's features of exactly these cuts, else computed and written atomically
    (the upstream is frozen: a probe's features never change)."""
    ids = [c.id for c in cuts]
    if cache is not None and Path(cache).is_file():
        stored = torch.load(cache, map_location="cpu", weights_only=True)
        if stored.get("upstream") == upstream.name and stored.get("ids") == ids:
            return stored["features"]
        logging.warning(f"{cache}: cached for {stored.get('upstream')} and {len(stored.get('ids', []))} "
                        f"other cuts; recomputing for {upstream.name}")
    feats = {c.id: upstream.cut_layers(c) for c in cuts}
    if cache is not None:
        atomic_torch_save({"upstream": upstream.name, "ids": ids, "features": feats}, cache)
        logging.info(f"{cache}: features of {len(ids)} cuts from {upstream.name}")
    return feats
