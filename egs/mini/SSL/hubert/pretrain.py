#!/usr/bin/env python3
"""Pretrain a tiny HuBERT Transformer on the mini corpus (waveform CNN front end).

    cd egs/mini/SSL
    ./prepare.sh && ./hubert/pretrain.py --num-epochs 2

Every option and its default: ``./hubert/pretrain.py --help``; the logic is in
``icefall.ssl.pretrain``.
"""
from icefall.ssl.pretrain import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        cuts_prefix="mini",
        encoder="hubert-tiny",
        frontend="cnn",
        manifest_dir="data/kmeans-fbank-100",
        num_classes=100,
        label_rate=100.0,
        exp_dir="hubert/exp-pretrain",
        num_epochs=3,
        max_duration=160.0,
        base_lr=0.045,
        lr_batches=1000,
        lr_epochs=10,
        warmup_batches=100,
        num_workers=0,
        save_every_n=200,
        valid_interval=200,
        log_interval=20,
        average_period=10,
    )
    main(parser.parse_args())
