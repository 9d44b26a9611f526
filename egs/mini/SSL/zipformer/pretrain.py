#!/usr/bin/env python3
"""Pretrain a small Zipformer HuBERT-style (k2SSL) on the mini corpus, on CPU in minutes.

    cd egs/mini/SSL
    ./prepare.sh && ./zipformer/pretrain.py --num-epochs 2

Every option and its default: ``./zipformer/pretrain.py --help``; the logic is in
``icefall.ssl.pretrain``.
"""
from defaults import ENCODER_OVERRIDES  # this directory's defaults.py

from icefall.ssl.pretrain import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="zipformer-tiny",
        cuts_prefix="mini",
        frontend="fbank",  # stored fbank: cheaper on CPU than the waveform CNN
        encoder_overrides=ENCODER_OVERRIDES,  # the size fine-tuning expects (defaults.py)
        # Zipformer's schedules (layer drop, bypass, balancers, ...) span ~20k batches of 600 s;
        # counting each second of audio as a batch fits them into a run of a few hundred batches.
        ref_duration=1.0,
        manifest_dir="data/kmeans-fbank-100",  # prepare.sh stage 5: fbank k-means labels
        num_classes=100,
        label_rate=100.0,
        # fairseq's feature penalty keeps raw CNN features small; on the normalised output of
        # the fbank front end it only fights the masked-prediction loss.
        feature_pen_weight=0.0,
        exp_dir="zipformer/exp-pretrain",
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
