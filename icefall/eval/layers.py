"""Per-layer evaluation of a pretrained model: ABX, PNMI and MAP@R of every layer, with the
input fbank as the reference row, written as a table, a PNG plot and a JSON file.

    python -m icefall.eval.layers --checkpoint spidr/exp/epoch-3.pt --manifest-dir data/fbank \\
        --split dev --out-dir spidr/exp/eval-epoch-3

For each representation (``fbank``: the cut's stored 80-d features at 100 Hz; ``0``: the
model's front end; ``1..L``: its encoder layers at 50 Hz):

* ABX within / across speaker over the phone items of the split (triphone contexts from the
  phone alignments in ``supervision.alignment["phone"]``, angular distance; ``icefall.eval.abx``);
* PNMI of k-means units (``--num-clusters``, fitted on the evaluated frames themselves) against
  frame phone labels (``icefall.eval.pnmi``); for SpidR/DinoSR also PNMI of the codebook units
  (argmax of the layer's prediction head, ``pnmi_codebook``) on the layers that have a codebook;
* MAP@R of mean-pooled word tokens (``supervision.alignment["word"]``; ``icefall.eval.mapr``).

Outputs in ``--out-dir``: ``layers.md`` and ``layers.png`` (``icefall.eval.report``) and
``layers.json`` (every number, with item and frame counts).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from icefall.eval.abx import Alignment, Item, abx_score, items_from_alignments
from icefall.eval.mapr import word_map_at_r
from icefall.eval.pnmi import pnmi_from_alignments
from icefall.eval.report import write_layer_report
from icefall.ssl.kmeans import KMeans
from icefall.utils import str2bool

Features = Mapping[str, Union[torch.Tensor, np.ndarray]]  # utt -> (T, D)
FBANK_RATE = 100.0  # stored fbank frames per second
MODEL_RATE = 50.0  # SSL encoder frames per second


def cut_alignments(cuts: Iterable) -> Tuple[Alignment, Alignment, Dict[str, str]]:
    """Phone and word alignments and speakers of single-supervision cuts, keyed by cut id.

    Returns:
      (phones, words, speakers): ``utt -> [(start_s, end_s, label)]`` with times relative to the
      cut start (lhotse keeps alignments relative to the cut, like ``supervision.start``), and
      ``utt -> speaker``.
    Raises ValueError naming the cut when it lacks a phone or word alignment.
    """
    phones, words, speakers = {}, {}, {}
    for cut in cuts:
        if len(cut.supervisions) != 1:
            raise ValueError(f"cut {cut.id}: expected one supervision, found {len(cut.supervisions)}")
        sup = cut.supervisions[0]
        ali = sup.alignment or {}
        for kind in ("phone", "word"):
            if kind not in ali:
                raise ValueError(f"cut {cut.id}: supervision has no {kind!r} alignment")
        phones[cut.id] = [(a.start, a.start + a.duration, a.symbol) for a in ali["phone"]]
        words[cut.id] = [(a.start, a.start + a.duration, a.symbol) for a in ali["word"]]
        speakers[cut.id] = sup.speaker
    return phones, words, speakers


@torch.no_grad()
def model_layer_features(
    model: torch.nn.Module,
    cuts: Iterable,
    source_fn: Callable[[object], torch.Tensor],
    layers: Optional[Sequence[int]] = None,
    device: Union[str, torch.device] = "cpu",
) -> Dict[int, Dict[str, torch.Tensor]]:
    """Every layer's features (``model.extract_features``: 0 = front end, 1..L), one cut at a
    time: ``{layer: {cut_id: (T, D_layer) float32 CPU tensor}}`` (valid frames only)."""
    out: Dict[int, Dict[str, torch.Tensor]] = {}
    for cut in cuts:
        source = source_fn(cut).to(device).unsqueeze(0)
        feats, lens = model.extract_features(source, torch.tensor([source.shape[1]], device=device), layers)
        names = list(layers) if layers is not None else list(range(len(feats)))
        for layer, f in zip(names, feats):
            out.setdefault(layer, {})[cut.id] = f[0, : int(lens[0])].float().cpu()
    return out


@torch.no_grad()
def model_codebook_units(
    model: torch.nn.Module,
    cuts: Iterable,
    source_fn: Callable[[object], torch.Tensor],
    device: Union[str, torch.device] = "cpu",
) -> Dict[int, Dict[str, torch.Tensor]]:
    """Codebook units (``model.predict_units``) of every layer in ``model.target_layers``:
    ``{layer: {cut_id: (T,) int64}}``."""
    out: Dict[int, Dict[str, torch.Tensor]] = {}
    for cut in cuts:
        source = source_fn(cut).to(device).unsqueeze(0)
        lens = torch.tensor([source.shape[1]], device=device)
        for layer in model.target_layers:
            units, out_lens = model.predict_units(source, lens, layer)
            out.setdefault(layer, {})[cut.id] = units[0, : int(out_lens[0])].cpu()
    return out


def kmeans_units(features: Features, num_clusters: int, seed: int = 0, num_epochs: int = 3) -> Dict[str, torch.Tensor]:
    """Fit k-means (``icefall.ssl.kmeans``) on all frames of ``features`` and label them:
    ``utt -> (T,) int64``."""
    frames = [torch.as_tensor(f).float() for f in features.values()]
    km = KMeans(num_clusters).fit(frames, num_epochs=num_epochs, generator=torch.Generator().manual_seed(seed))
    return {utt: km.predict(torch.as_tensor(f).float()) for utt, f in features.items()}


def evaluate_representation(
    features: Features,
    frame_rate: float,
    phones: Alignment,
    words: Alignment,
    items: Sequence[Item],
    num_clusters: int = 50,
    seed: int = 0,
) -> Dict[str, float]:
    """ABX (within, across), PNMI of k-means units and MAP@R of one representation.

    Args:
      features: utt -> (T, D) frames at ``frame_rate`` Hz.
      phones, words: utt -> [(start_s, end_s, label)] (see :func:`cut_alignments`).
      items: ABX items (``items_from_alignments(phones, speakers)``).
    Returns:
      {"abx_within", "abx_across", "abx_items", "pnmi", "phone_purity", "cluster_purity",
      "mapr"}: fractions.
    """
    abx = abx_score(features, items, frame_rate, seed=seed)
    q = pnmi_from_alignments(kmeans_units(features, num_clusters, seed), phones, frame_rate)
    return {
        "abx_within": abx["within"],
        "abx_across": abx["across"],
        "abx_items": abx["n_items"],
        "pnmi": q["pnmi"],
        "phone_purity": q["phone_purity"],
        "cluster_purity": q["cluster_purity"],
        "mapr": word_map_at_r(features, words, frame_rate),
    }


def evaluate_layers(
    layer_features: Mapping[Union[int, str], Features],
    frame_rates: Mapping[Union[int, str], float],
    phones: Alignment,
    words: Alignment,
    speakers: Mapping[str, str],
    codebook_units: Optional[Mapping[int, Mapping[str, torch.Tensor]]] = None,
    num_clusters: int = 50,
    seed: int = 0,
) -> Dict[Union[int, str], Dict[str, float]]:
    """:func:`evaluate_representation` of every entry of ``layer_features`` (e.g. ``"fbank"``
    and layers 0..L), plus ``pnmi_codebook`` where ``codebook_units`` has the layer.

    Returns ``{layer: metrics}``, the input of :func:`icefall.eval.report.write_layer_report`."""
    items = items_from_alignments(phones, speakers)
    results: Dict[Union[int, str], Dict[str, float]] = {}
    for name, feats in layer_features.items():
        t0 = time.time()
        results[name] = evaluate_representation(feats, frame_rates[name], phones, words, items, num_clusters, seed)
        if codebook_units is not None and name in codebook_units:
            results[name]["pnmi_codebook"] = pnmi_from_alignments(codebook_units[name], phones, frame_rates[name])["pnmi"]
        logging.info(f"layer {name}: {results[name]} ({time.time() - t0:.1f} s)")
    return results


def evaluate_checkpoint(
    checkpoint: Path,
    cuts: Sequence,
    out_dir: Path,
    num_clusters: int = 50,
    seed: int = 0,
    reference: bool = True,
    title: str = "",
    device: str = "cpu",
) -> Dict[Union[int, str], Dict[str, float]]:
    """Evaluate every layer of a ``pretrain.py`` checkpoint (and the stored fbank of ``cuts`` when
    ``reference``) and write ``layers.{md,png,json}`` into ``out_dir``."""
    from icefall.models import load_feature_model
    from icefall.ssl.units import cut_waveform

    model, config = load_feature_model(checkpoint, device)
    source_fn = cut_waveform if config.input_type == "wav" else (lambda c: torch.as_tensor(c.load_features()))
    phones, words, speakers = cut_alignments(cuts)
    feats: Dict[Union[int, str], Features] = {}
    rates: Dict[Union[int, str], float] = {}
    if reference:
        feats["fbank"] = {c.id: torch.as_tensor(c.load_features()) for c in cuts}
        rates["fbank"] = FBANK_RATE
    for layer, f in model_layer_features(model, cuts, source_fn, device=device).items():
        feats[layer], rates[layer] = f, MODEL_RATE
    units = model_codebook_units(model, cuts, source_fn, device) if hasattr(model, "predict_units") else None
    results = evaluate_layers(feats, rates, phones, words, speakers, units, num_clusters, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_layer_report(results, out_dir / "layers", title=title or str(checkpoint))
    info = {"checkpoint": str(checkpoint), "cuts": len(cuts), "num_clusters": num_clusters, "seed": seed,
            "results": {str(k): v for k, v in results.items()}}
    tmp = out_dir / f".tmp{os.getpid()}.layers.json"
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, out_dir / "layers.json")
    return results


def get_parser(**defaults) -> argparse.ArgumentParser:
    """The options of :func:`main`; ``defaults`` are a recipe's own."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a pretrain.py checkpoint (epoch-N.pt), or any other icefall.models.load_model reads")
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"), help="cuts with fbank and alignments")
    parser.add_argument("--prefix", default=None, help="cuts are <manifest-dir>/<prefix>_cuts_<split>.jsonl.gz (required)")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--max-cuts", type=int, default=None, help="evaluate the first N cuts only")
    parser.add_argument("--num-clusters", type=int, default=50, help="k-means units for PNMI")
    parser.add_argument("--reference", type=str2bool, default=True,
                        help="also evaluate the stored fbank (the reference row)")
    parser.add_argument("--out-dir", type=Path, required=True, help="layers.md, layers.png, layers.json go here")
    parser.add_argument("--title", default="", help="title of the table and plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(**defaults)
    return parser


def main(args: argparse.Namespace) -> None:
    from lhotse import load_manifest_lazy

    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if not args.prefix:
        raise ValueError("--prefix is not set: the corpus name of <prefix>_cuts_<split>.jsonl.gz")
    path = args.manifest_dir / f"{args.prefix}_cuts_{args.split}.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest (check --manifest-dir, --prefix, --split)")
    cuts = load_manifest_lazy(path)
    cuts = list(cuts.subset(first=args.max_cuts) if args.max_cuts else cuts)
    results = evaluate_checkpoint(args.checkpoint, cuts, args.out_dir, args.num_clusters, args.seed,
                                  args.reference, args.title, args.device)
    logging.info(f"{len(cuts)} cuts of {path}: {len(results)} rows -> {args.out_dir}/layers.md")


if __name__ == "__main__":
    main(get_parser().parse_args())
