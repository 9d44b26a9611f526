#!/usr/bin/env python3
"""Fine-tune the mini Zipformer with CTC on the 10-minute labeled split (letters).

    cd egs/mini/SSL
    ./zipformer/finetune.py --init-ckpt zipformer/exp-pretrain/epoch-3.pt --exp-dir zipformer/exp-ft
    ./zipformer/finetune.py --init-ckpt none --exp-dir zipformer/exp-scratch   # baseline

Use ``--use-transducer true`` (and ``--lang-dir data/lang_bpe_256``) for pruned RNN-T. Every
option: ``--help``; the logic is in ``icefall.asr.finetune``.
"""
from icefall.asr.finetune import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="zipformer-tiny",
        frontend="fbank",
        # A light Conv2d front end for CPU, and no dropout: a 1M model on 2 h underfits.
        encoder_overrides="frontend_layer3_channels=32,dropout=0.0",
        # Zipformer's schedules (layer drop, bypass, balancers, ...) span ~20k batches of 600 s;
        # counting each second of audio as a batch fits them into a run of a few hundred batches.
        ref_duration=1.0,
        lang_dir="data/lang_char",
        use_ctc=True,
        use_transducer=False,
        decoder_dim=128,
        joiner_dim=128,
        exp_dir="zipformer/exp-ft",
        num_epochs=20,
        # Small batches (more updates) and little corruption: 10 minutes of speech, a 1M model.
        max_duration=20.0,
        enable_spec_aug=False,
        base_lr=0.045,
        lr_batches=1000,
        lr_epochs=20,
        warmup_batches=100,
        warm_step=200,
        mask_prob=0.1,
        num_workers=0,
        save_every_n=1000,
        valid_interval=1000,
        log_interval=20,
        average_period=10,
    )
    main(parser.parse_args())
