#!/usr/bin/env python3
"""k2SSL Large: HuBERT-style pretraining of a Zipformer (~305M) on Libri-Light (60k h).

    cd egs/librilight/SSL
    # labels: k-means (500) of layer 6 of a pretrained Base model (k2SSL took HuBERT Base's)
    ./prepare.sh --label-ckpt ../../librispeech/SSL/zipformer/exp-iter2/epoch-45.pt \\
        --label-layer 6 --device cuda
    # several nodes: one torchrun per node (or local/slurm_pretrain.sbatch under SLURM)
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-id ll --rdzv-backend c10d \\
        --rdzv-endpoint $HEAD:29500 ./zipformer/pretrain.py --use-fp16 true

Reads data/kmeans-l6-500/librilight_cuts_{train,dev}.jsonl.gz (prepare.sh stages 5-6).
Defaults are k2SSL Base's optimizer settings with the Large encoder; docs/librilight.md says
which values come from the papers and which are estimates.
"""
from icefall.ssl.pretrain import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="zipformer-ssl-large",
        frontend="cnn",
        cuts_prefix="librilight",
        manifest_dir="data/kmeans-l6-500",
        train_split="train",
        valid_split="dev",
        num_classes=500,
        label_rate=50.0,
        mask_prob=0.8,
        mask_length=10,
        logit_temp=0.1,
        exp_dir="zipformer/exp-pretrain",
        num_epochs=25,  # ~250k steps on 32 GPUs (docs/librilight.md)
        max_duration=650.0,
        max_sample_duration=15.625,  # fairseq's max_sample_size 250000 samples
        sampler_buffer_size=20000,  # segments of one file are adjacent in the manifest
        base_lr=0.045,
        lr_batches=7500,
        lr_epochs=10.5,
        warmup_batches=5000,
        num_workers=8,
        save_every_n=4000,
    )
    main(parser.parse_args())
