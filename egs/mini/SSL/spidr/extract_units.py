#!/usr/bin/env python3
"""Discrete units of one layer of a SpidR/DinoSR checkpoint, per utterance, for spoken language
modelling or unit evaluation.

    cd egs/mini/SSL
    # codebook units: argmax of the layer's prediction head (layers with a codebook only)
    ./spidr/extract_units.py --checkpoint spidr/exp/epoch-3.pt --layer 2 --out-dir data/units-cb-l2
    # k-means units of any layer (fitted on --fit-split, as icefall.ssl.labels does)
    ./spidr/extract_units.py --checkpoint spidr/exp/epoch-3.pt --layer 1 --units kmeans \\
        --num-clusters 100 --out-dir data/units-km100-l1

Writes, per split, ``<out-dir>/<prefix>_cuts_<split>.jsonl.gz`` (codebook units in
``cut.custom["units"]``, k-means units in ``cut.custom["kmeans"]``, one int per 20 ms frame)
and ``<out-dir>/units_<split>.txt``: ``<cut id> <units...>`` with repeats collapsed
(``icefall.ssl.units.deduplicate``; ``--deduplicate false`` keeps every frame).
"""
import argparse
import logging
from pathlib import Path

from icefall.ssl.labels import checkpoint_feature_fn, fit_and_label, load_pretrained
from icefall.ssl.units import write_codebook_units, write_unit_text
from icefall.utils import str2bool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a spidr/pretrain.py checkpoint")
    parser.add_argument("--layer", type=int, required=True, help="1..L (codebook: one of the model's target layers; k-means: also 0 = front end)")
    parser.add_argument("--units", choices=["codebook", "kmeans"], default="codebook")
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    parser.add_argument("--prefix", default="mini")
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--deduplicate", type=str2bool, default=True, help="collapse repeated units in units_<split>.txt")
    parser.add_argument("--num-clusters", type=int, default=100, help="k-means: clusters")
    parser.add_argument("--fit-split", default="train-unlabeled", help="k-means: split to fit on")
    parser.add_argument("--max-fit-frames", type=int, default=200000, help="k-means: fit on at most this many frames")
    parser.add_argument("--kmeans-model", type=Path, default=None, help="k-means: label with this fitted model")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.units == "kmeans":
        key = "kmeans"
        fit_and_label(args.manifest_dir, args.out_dir, args.prefix, args.fit_split, args.splits,
                      checkpoint_feature_fn(args.checkpoint, args.layer, args.device), args.num_clusters,
                      args.max_fit_frames, args.kmeans_model, meta={"checkpoint": str(args.checkpoint), "layer": args.layer})
    else:
        import torch
        from lhotse import load_manifest_lazy

        key = "units"
        model, input_type = load_pretrained(args.checkpoint, args.device)
        if not hasattr(model, "predict_units"):
            parser.error(f"{args.checkpoint} is not a SpidR/DinoSR model: use --units kmeans")
        source_fn = {} if input_type == "wav" else {"source_fn": lambda c: torch.as_tensor(c.load_features())}
        for split in args.splits:
            name = f"{args.prefix}_cuts_{split}.jsonl.gz"
            write_codebook_units(load_manifest_lazy(args.manifest_dir / name), model, args.layer,
                                 args.out_dir / name, device=args.device, **source_fn)
    for split in args.splits:
        txt = args.out_dir / f"units_{split}.txt"
        n = write_unit_text(args.out_dir / f"{args.prefix}_cuts_{split}.jsonl.gz", key, txt, args.deduplicate)
        logging.info(f"{split}: {args.units} units of layer {args.layer} for {n} cuts -> {txt}")


if __name__ == "__main__":
    main()
