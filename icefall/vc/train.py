"""Train the kNN-VC vocoder on prematched features of a corpus (``knn_vc/train_vocoder.py``).

    cd egs/mini/SSL
    ./knn_vc/train_vocoder.py --features fbank --exp-dir knn_vc/exp-fbank
    ./knn_vc/train_vocoder.py --features zipformer/exp-pretrain/epoch-2.pt --layer 3 \\
        --exp-dir knn_vc/exp-zipformer-l3

Writes ``epoch-N.pt`` / ``checkpoint-B.pt`` (the shared trainer's; a rerun resumes) whose params
record the features (``features``, ``layer``) that :class:`icefall.vc.convert.KnnVC` extracts.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional

from icefall.trainer import add_training_arguments, setup_run
from icefall.utils import AttributeDict
from icefall.vc.data import read_utterances, vocoder_training_data
from icefall.vc.features import FeatureExtractor
from icefall.vc.vocoder import VocoderConfig, train_vocoder


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser)
    g = parser.add_argument_group("kNN-VC vocoder")
    g.add_argument("--features", default="fbank", help="'fbank' or a checkpoint load_model reads")
    g.add_argument("--layer", type=int, default=None, help="with a checkpoint: 0 = front end, 1..L encoder layers")
    g.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    g.add_argument("--cuts-prefix", default="mini")
    g.add_argument("--train-split", default="train-unlabeled")
    g.add_argument("--max-per-speaker", type=int, default=40, help="utterances of each training speaker")
    g.add_argument("--prematch-k", type=int, default=4, help="0: train on the plain features")
    g.add_argument("--channels", type=int, default=128, help="after the input conv (HiFi-GAN V1: 512)")
    g.add_argument("--resblock-kernel-sizes", type=int, nargs="+", default=[3], help="HiFi-GAN V1: 3 7 11")
    g.add_argument("--resblock-dilations", type=int, nargs="+", default=[1, 3, 9], help="HiFi-GAN V1: 1 3 5")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--segment-seconds", type=float, default=0.32)
    g.add_argument("--lr-decay", type=float, default=0.999, help="lr factor per batch")
    parser.set_defaults(**{"base_lr": 2e-3, "log_interval": 20, "average_period": 10, "valid_interval": 10**9,
                           "save_every_n": 100, "num_epochs": 28, "exp_dir": Path("knn_vc/exp"), **defaults})
    return parser


def main(args: argparse.Namespace, rank: int = 0) -> None:
    params = AttributeDict(vars(args))
    device = setup_run(params, rank, 1, "train-vocoder")  # cuda:0 where a GPU is, else cpu
    extractor = FeatureExtractor(args.features, args.layer, str(device))
    utts = read_utterances(args.manifest_dir / f"{args.cuts_prefix}_cuts_{args.train_split}.jsonl.gz",
                           max_per_speaker=args.max_per_speaker)
    data = vocoder_training_data(extractor, utts, args.prematch_k, args.segment_seconds)
    config = VocoderConfig(input_dim=extractor.dim, hop_length=extractor.hop_length, channels=args.channels,
                           resblock_kernel_sizes=tuple(args.resblock_kernel_sizes),
                           resblock_dilations=tuple(args.resblock_dilations))
    params.vocoder_config = config.to_dict()
    params.features = str(args.features)
    params.feature_name = extractor.name
    train_vocoder(params, data, device=device)
    logging.info(f"vocoder for {extractor.name} trained: {params.exp_dir}")


if __name__ == "__main__":
    main(get_parser().parse_args())
