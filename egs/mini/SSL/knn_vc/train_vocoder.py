#!/usr/bin/env python3
"""Train the kNN-VC vocoder on prematched mini-corpus features (fbank or a model's layer).

    cd egs/mini/SSL
    ./knn_vc/train_vocoder.py --features fbank --exp-dir knn_vc/exp-fbank
    ./knn_vc/train_vocoder.py --features zipformer/exp-pretrain/epoch-2.pt --layer 3 --exp-dir knn_vc/exp-l3

Every option: ``--help``; the logic is in ``icefall.vc.train`` and ``icefall.vc.vocoder``.
"""
from icefall.vc.train import get_parser, main

if __name__ == "__main__":
    main(get_parser(manifest_dir="data/fbank", cuts_prefix="mini", train_split="train-unlabeled",
                    max_per_speaker=40, num_epochs=28, exp_dir="knn_vc/exp-fbank").parse_args())
