"""K-means labels for HuBERT-style pretraining: fit on one split, label every split.

Iteration 1 clusters MFCC-39 (or fbank) frames at 100 Hz; iteration n clusters the output of one
layer of a pretrained model (50 Hz), or of a fine-tuned ASR model's encoder (VietASR). The labelled cuts go to a new manifest directory, so that
each iteration keeps its own labels::

    python -m icefall.ssl.labels --manifest-dir data/fbank --out-dir data/kmeans-mfcc-100 \\
        --features mfcc --num-clusters 100
    python -m icefall.ssl.labels --manifest-dir data/fbank --out-dir data/kmeans-l4-500 \\
        --features layer --checkpoint zipformer/exp/epoch-20.pt --layer 4 --num-clusters 500

The k-means model is saved to ``<out-dir>/kmeans.pt`` (``icefall.ssl.kmeans.KMeans.load``), so
new data can be labelled with the same clusters (``--kmeans-model``).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import torch

from icefall.ssl.kmeans import KMeans, cut_features, write_kmeans_labels

FeatureFn = Callable[[object], torch.Tensor]


def load_pretrained(checkpoint: Path, device: str = "cpu") -> Tuple[torch.nn.Module, str]:
    """The feature model of any checkpoint :func:`icefall.models.load_model` reads, in eval
    mode, and its input type ("wav" or "fbank").

    A pretraining checkpoint (any ``--method``, converted or raw fairseq) gives the objective's
    model; a fine-tuned ASR checkpoint gives its encoder (an ``SslEncoder``, with the fine-tuned
    weights), as VietASR takes k-means on a supervised ASR encoder. Both have
    ``extract_features(source, lens, layers)``, and layer indices mean the same in both.
    """
    from icefall.models import load_feature_model

    model, config = load_feature_model(checkpoint, device)
    return model, config.input_type


def checkpoint_feature_fn(checkpoint: Path, layer: int, device: str = "cpu") -> FeatureFn:
    """cut -> (T, D) output of ``layer`` (0 = front end, 1..L encoder layers) of a pretrained
    model; see :func:`icefall.ssl.units.layer_feature_fn`."""
    from icefall.ssl.units import layer_feature_fn

    model, input_type = load_pretrained(checkpoint, device)
    if input_type == "fbank":
        return layer_feature_fn(model, layer, device, lambda cut: torch.as_tensor(cut.load_features()))
    return layer_feature_fn(model, layer, device)


def _feature_stream(cuts, fn: FeatureFn, max_frames: Optional[int]) -> Iterator[torch.Tensor]:
    seen = 0
    for cut in cuts:
        feats = fn(cut)
        yield feats
        seen += feats.shape[0]
        if max_frames is not None and seen >= max_frames:
            return


def fit_and_label(
    manifest_dir: Path,
    out_dir: Path,
    prefix: str,
    fit_split: str,
    splits: List[str],
    feature_fn: FeatureFn,
    num_clusters: int,
    max_fit_frames: Optional[int] = None,
    kmeans_model: Optional[Path] = None,
    seed: int = 0,
    meta: Optional[dict] = None,
) -> Path:
    """Fit (unless ``kmeans_model`` is given) and write ``<out_dir>/<prefix>_cuts_<split>``."""
    from lhotse import load_manifest_lazy

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "kmeans.pt"
    if kmeans_model is not None:
        km = KMeans.load(kmeans_model)
    elif model_path.is_file():
        logging.info(f"{model_path} exists: reusing it")
        km = KMeans.load(model_path)
    else:
        cuts = load_manifest_lazy(manifest_dir / f"{prefix}_cuts_{fit_split}.jsonl.gz")
        km = KMeans(num_clusters, meta=meta)
        g = torch.Generator().manual_seed(seed)
        km.fit(_feature_stream(cuts, feature_fn, max_fit_frames), generator=g)
        km.save(model_path)
        logging.info(f"Fitted {num_clusters} clusters on {fit_split}; saved {model_path}")
    for split in splits:
        src = manifest_dir / f"{prefix}_cuts_{split}.jsonl.gz"
        dst = out_dir / f"{prefix}_cuts_{split}.jsonl.gz"
        if dst.is_file():
            logging.info(f"{dst} exists: skipping")
            continue
        write_kmeans_labels(load_manifest_lazy(src), km, feature_fn, dst)
        logging.info(f"Labelled {src} -> {dst}")
    return model_path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--prefix", required=True, help="corpus name: <prefix>_cuts_<split>.jsonl.gz")
    parser.add_argument("--fit-split", default="train-unlabeled")
    parser.add_argument("--splits", nargs="+", default=["train-unlabeled", "dev"])
    parser.add_argument("--features", choices=["mfcc", "fbank", "stored", "layer"], default="mfcc")
    parser.add_argument("--checkpoint", type=Path, help="--features layer: a pretrain.py or finetune.py (ASR) checkpoint, "
                        "convert_fairseq.py output or fairseq:<path>")
    parser.add_argument("--layer", type=int, default=-1, help="--features layer: 0 = front end, 1..L encoder layers")
    parser.add_argument("--num-clusters", type=int, default=100)
    parser.add_argument("--max-fit-frames", type=int, default=None, help="fit on at most this many frames")
    parser.add_argument("--kmeans-model", type=Path, default=None, help="label with this fitted model instead of fitting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.features == "layer":
        if args.checkpoint is None:
            parser.error("--features layer needs --checkpoint")
        fn = checkpoint_feature_fn(args.checkpoint, args.layer, args.device)
    else:
        fn = lambda cut: cut_features(cut, args.features)  # noqa: E731
    meta = {k: str(v) for k, v in vars(args).items()}
    fit_and_label(
        args.manifest_dir, args.out_dir, args.prefix, args.fit_split, args.splits, fn,
        args.num_clusters, args.max_fit_frames, args.kmeans_model, args.seed, meta,
    )


if __name__ == "__main__":
    main()
