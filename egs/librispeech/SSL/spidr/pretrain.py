#!/usr/bin/env python3
"""SpidR Base on LibriSpeech 960 h (Transformer without Q/K/V biases, 8 codebooks of 256).

    cd egs/librispeech/SSL
    ./spidr/pretrain.py --world-size 8 --use-bf16 true
    ./spidr/pretrain.py --method dinosr ...     # DinoSR: all heads on the last layer

No k-means labels are needed. See docs/spidr.md and ``--help``. Fine-tuning, decoding and
export use the zipformer/ scripts with ``--init-ckpt spidr/exp/epoch-45.pt`` (docs/librispeech.md).
"""
from icefall.ssl.pretrain import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        method="spidr",
        encoder="hubert-base",
        frontend="cnn",
        cuts_prefix="librispeech",
        manifest_dir="data/fbank",
        train_split="train-all-shuf",
        valid_split="dev-clean",
        num_codebooks=8,
        codebook_size=256,
        ema_timescale=10000.0,
        exp_dir="spidr/exp",
        num_epochs=45,
        max_duration=650.0,
        max_sample_duration=15.625,
        base_lr=0.045,
        lr_batches=7500,
        lr_epochs=10.5,
        warmup_batches=5000,
        num_workers=4,
    )
    main(parser.parse_args())
