"""Discrete units from a pretrained model, for spoken language modelling and unit evaluation.

Two kinds (SpidR paper, section 4.1):

- **codebook units** (SpidR/DinoSR): the argmax of a layer's prediction head,
  ``SpidrModel.predict_units`` — :func:`write_codebook_units` stores them in the cuts;
- **k-means units**: a layer's features (``extract_features`` of ``HubertModel`` or
  ``SpidrModel``) — :func:`layer_feature_fn` gives ``icefall.ssl.kmeans`` its features.

Units are stored like k-means labels: ``cut.custom[key]`` is a space-separated string of ints at
the model's frame rate.  :func:`deduplicate` collapses repeats, as spoken LMs are fed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, List, Sequence, Union

import torch

from icefall.ssl.kmeans import write_kmeans_labels


def deduplicate(units: Sequence[int]) -> List[int]:
    """Collapse runs of the same unit: ``[3, 3, 5, 5, 5, 3] -> [3, 5, 3]``."""
    return [int(u) for i, u in enumerate(units) if i == 0 or u != units[i - 1]]


def cut_waveform(cut) -> torch.Tensor:
    """The cut's first channel as a float32 (N,) tensor (the CNN front end's input)."""
    return torch.as_tensor(cut.load_audio()[0], dtype=torch.float32)


def _batch_of_one(source: torch.Tensor, device: Union[str, torch.device]):
    """One utterance (N,) or (T, C) -> a batch of one on ``device`` with its length."""
    source = source.to(device).unsqueeze(0)
    return source, torch.tensor([source.shape[1]], device=device)


def layer_feature_fn(
    model: torch.nn.Module,
    layer: int,
    device: Union[str, torch.device] = "cpu",
    source_fn: Callable[[object], torch.Tensor] = cut_waveform,
) -> Callable[[object], torch.Tensor]:
    """cut -> (T, D) float32 features of ``layer`` (0 = front end, 1..L = encoder layers) of a
    model with ``extract_features(source, lens, layers)``; e.g. the ``feature_fn`` of
    :func:`icefall.ssl.kmeans.write_kmeans_labels`.  ``source_fn`` maps a cut to the model's
    input (default: the waveform; pass ``lambda c: torch.as_tensor(c.load_features())`` for fbank)."""

    @torch.no_grad()
    def features(cut) -> torch.Tensor:
        source, lens = _batch_of_one(source_fn(cut), device)
        (feats,), out_lens = model.extract_features(source, lens, layers=[layer])
        return feats[0, : int(out_lens[0])].float().cpu()

    return features


class _UnitsAreLabels:
    """Lets :func:`write_kmeans_labels` (atomic manifest writing) store units computed elsewhere:
    its "features" already are the labels."""

    @staticmethod
    def predict(units: torch.Tensor) -> torch.Tensor:
        return units


def write_codebook_units(
    cuts: Iterable,
    model: torch.nn.Module,
    layer: int,
    out_path: Union[str, Path],
    key: str = "units",
    device: Union[str, torch.device] = "cpu",
    source_fn: Callable[[object], torch.Tensor] = cut_waveform,
) -> Path:
    """Write a manifest whose cuts carry ``cut.custom[key]``: the codebook units of ``layer``
    (``model.predict_units``, one cut at a time, eval mode), at the model's frame rate."""
    model.eval()

    @torch.no_grad()
    def units(cut) -> torch.Tensor:
        source, lens = _batch_of_one(source_fn(cut), device)
        u, out_lens = model.predict_units(source, lens, layer)
        return u[0, : int(out_lens[0])].cpu()

    return write_kmeans_labels(cuts, _UnitsAreLabels, units, out_path, key=key)


def write_unit_text(cuts_path: Union[str, Path], key: str, out_path: Union[str, Path],
                    dedup: bool = True) -> int:
    """``<cut id> <units>`` lines from ``cut.custom[key]`` (repeats collapsed when ``dedup``),
    the input of the unit LM (``icefall.slm``); written atomically. Returns the line count."""
    from lhotse import load_manifest_lazy

    from icefall.utils import atomic_write_path

    out_path = Path(out_path)
    tmp, n = atomic_write_path(out_path), 0
    with open(tmp, "w") as f:
        for cut in load_manifest_lazy(cuts_path):
            if key not in (cut.custom or {}):
                raise ValueError(f"{cuts_path}: cut {cut.id} has no custom[{key!r}]")
            units = [int(u) for u in cut.custom[key].split()]
            f.write(" ".join([cut.id] + [str(u) for u in (deduplicate(units) if dedup else units)]) + "\n")
            n += 1
    tmp.replace(out_path)
    return n
