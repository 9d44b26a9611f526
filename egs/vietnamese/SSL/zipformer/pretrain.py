#!/usr/bin/env python3
"""VietASR-style HuBERT pretraining of a Zipformer on Vietnamese: fbank front end, masked
prediction of k-means labels of a fine-tuned ASR encoder (500 clusters, 50 Hz), on the
GigaSpeech 2 Vietnamese training audio.

    cd egs/vietnamese/SSL
    ./prepare.sh && ./iterate.sh --iter 0 && ./iterate.sh --iter 1     # the loop runs this
    ./zipformer/pretrain.py --world-size 8 --use-fp16 true \\
        --manifest-dir data/kmeans-asr0-500 --exp-dir zipformer/exp-pretrain-iter1

Every option and its default: ``--help``; the logic is in ``icefall.ssl.pretrain``;
docs/vietnamese.md describes the loop.
"""
from icefall.ssl.pretrain import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="zipformer-ssl-base",
        frontend="fbank",  # VietASR: fbank front end
        feature_pen_weight=0.0,  # no fairseq feature penalty on the fbank front end
        cuts_prefix="vietnamese",
        manifest_dir="data/kmeans-asr0-500",
        train_split="gigaspeech2-train",
        valid_split="gigaspeech2-dev",
        num_classes=500,
        label_rate=50.0,
        mask_prob=0.8,
        mask_length=10,
        exp_dir="zipformer/exp-pretrain-iter1",
        num_epochs=20,
        max_duration=1000.0,
        base_lr=0.045,
        lr_batches=7500,
        lr_epochs=3.5,
        warmup_batches=5000,
        num_workers=4,
        save_every_n=4000,
    )
    main(parser.parse_args())
