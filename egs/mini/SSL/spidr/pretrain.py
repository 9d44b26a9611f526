#!/usr/bin/env python3
"""SpidR (or DinoSR, ``--method dinosr``) self-distillation on the mini corpus: no k-means labels.

    cd egs/mini/SSL
    ./prepare.sh --stop-stage 4 && ./spidr/pretrain.py --num-epochs 9
    ./spidr/run_spidr.sh            # SpidR and DinoSR side by side, per-layer evaluation

Tiny Transformer (SpidR Table 5 choices: no Q/K/V biases) on CPU, behind the fbank front end:
with the tiny waveform CNN (``--frontend cnn``, the paper's) every mini run collapsed its
codebooks (docs/spidr.md). Every option: ``--help``; the logic is in ``icefall.ssl.pretrain``
and ``icefall.ssl.spidr``.
"""
from icefall.ssl.pretrain import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        method="spidr",
        cuts_prefix="mini",
        encoder="hubert-tiny",
        frontend="fbank",
        manifest_dir="data/fbank",
        num_codebooks=2,
        codebook_size=64,
        ema_timescale=300.0,
        exp_dir="spidr/exp",
        num_epochs=3,
        max_duration=60.0,
        base_lr=0.02,
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
