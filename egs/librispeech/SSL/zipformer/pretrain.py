#!/usr/bin/env python3
"""k2SSL Base: HuBERT-style pretraining of a Zipformer (~95M) on LibriSpeech 960 h.

    cd egs/librispeech/SSL
    ./prepare.sh                      # manifests, fbank, k-means labels (iteration 1: MFCC)
    ./zipformer/pretrain.py --world-size 8 --use-fp16 true --num-epochs 45 \\
        --manifest-dir data/kmeans-mfcc-100 --num-classes 100 --label-rate 100
    # iteration 2: labels from layer features of the iteration-1 model (500 clusters, 50 Hz)
    ./zipformer/pretrain.py --world-size 8 --use-fp16 true \\
        --manifest-dir data/kmeans-l6-500 --num-classes 500 --label-rate 50 --exp-dir zipformer/exp-iter2

Defaults follow k2SSL Base (mask prob 0.8, span 10, label rate 50, 500 classes, logit
temperature 0.1, ScaledAdam base lr 0.045 with Eden); see docs/librispeech.md.
"""
from icefall.ssl.pretrain import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="zipformer-ssl-base",
        frontend="cnn",
        cuts_prefix="librispeech",
        manifest_dir="data/kmeans-l6-500",
        train_split="train-all-shuf",
        valid_split="dev-clean",
        num_classes=500,
        label_rate=50.0,
        mask_prob=0.8,
        mask_length=10,
        logit_temp=0.1,
        exp_dir="zipformer/exp-pretrain",
        num_epochs=45,
        max_duration=650.0,
        max_sample_duration=15.625,  # fairseq's max_sample_size 250000 samples
        base_lr=0.045,
        lr_batches=7500,
        lr_epochs=10.5,
        warmup_batches=5000,
        num_workers=4,
        save_every_n=4000,
    )
    main(parser.parse_args())
