"""Per-utterance features of chosen layers of a pretrained model (for k-means, units, probing).

    python -m icefall.ssl.extract --checkpoint zipformer/exp-pretrain/epoch-2.pt \\
        --manifest-dir data/fbank --splits dev test --layers 0 2 4 --out-dir data/features-epoch2

Writes ``<out-dir>/<prefix>_cuts_<split>.jsonl.gz``: the input cuts, each with one
``custom["layer_<k>"]`` array per layer (lilcom-compressed in ``<out-dir>/<split>/``,
frame shift 0.02 s); read one with ``cut.load_custom("layer_4")`` -> (T, D) numpy array.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import List

import torch

from icefall.ssl.labels import load_pretrained
from icefall.utils import atomic_write_path

FRAME_SHIFT = 0.02  # SSL encoders run at 50 Hz


def extract_split(model, input_type: str, cuts_in: Path, cuts_out: Path, storage: Path,
                  layers: List[int], device: str = "cpu") -> int:
    """Features of ``layers`` for every cut of ``cuts_in``; returns the number of cuts.

    The manifest is written to a temporary sibling and renamed at the end.
    """
    from lhotse import CutSet, LilcomChunkyWriter, load_manifest_lazy

    from icefall.ssl.units import cut_waveform

    storage.mkdir(parents=True, exist_ok=True)
    tmp = atomic_write_path(cuts_out)
    n = 0
    try:
        with LilcomChunkyWriter(storage / "layers") as writer, CutSet.open_writer(tmp) as out:
            for cut in load_manifest_lazy(cuts_in):
                x = cut_waveform(cut) if input_type == "wav" else torch.as_tensor(cut.load_features())
                x = x.to(device).unsqueeze(0)
                with torch.no_grad():
                    feats, lens = model.extract_features(x, torch.tensor([x.shape[1]], device=device), layers=layers)
                for layer, f in zip(layers, feats):
                    array = f[0, : int(lens[0])].float().cpu().numpy()
                    stored = writer.store_array(f"{cut.id}-layer{layer}", array, frame_shift=FRAME_SHIFT, temporal_dim=0)
                    cut = cut.with_custom(f"layer_{layer}", stored)
                out.write(cut)
                n += 1
        os.replace(tmp, cuts_out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a pretrain.py checkpoint")
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    parser.add_argument("--prefix", required=True, help="corpus name: <prefix>_cuts_<split>.jsonl.gz")
    parser.add_argument("--splits", nargs="+", default=["dev"])
    parser.add_argument("--layers", type=int, nargs="+", required=True, help="0 = front end, 1..L encoder layers")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    model, input_type = load_pretrained(args.checkpoint, args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split in args.splits:
        name = f"{args.prefix}_cuts_{split}.jsonl.gz"
        n = extract_split(model, input_type, args.manifest_dir / name, args.out_dir / name,
                          args.out_dir / split, args.layers, args.device)
        logging.info(f"{split}: layers {args.layers} of {n} cuts -> {args.out_dir / name}")


if __name__ == "__main__":
    main()
