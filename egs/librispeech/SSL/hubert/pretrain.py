#!/usr/bin/env python3
"""HuBERT Base (Transformer, ~95M) pretraining on LibriSpeech 960 h, in this toolkit's trainer.

    cd egs/librispeech/SSL
    ./hubert/pretrain.py --world-size 8 --use-fp16 true --manifest-dir data/kmeans-l6-500

Continue from an official fairseq checkpoint: convert it first
(``./hubert/convert_fairseq.py --in hubert_base_ls960.pt --out hubert/exp/fairseq-init.pt``;
docs/fairseq.md). See ``--help`` for every option.

Fine-tuning, decoding and export use the zipformer/ scripts, which read the architecture from
the checkpoint: ``./zipformer/finetune.py --init-ckpt hubert/exp-pretrain/epoch-45.pt --exp-dir
hubert/exp-ft100h``, then ``./zipformer/decode.py --exp-dir hubert/exp-ft100h ...`` and
``./zipformer/export.py --exp-dir hubert/exp-ft100h ...`` (docs/librispeech.md).
"""
from icefall.ssl.pretrain import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="hubert-base",
        frontend="cnn",
        cuts_prefix="librispeech",
        manifest_dir="data/kmeans-l6-500",
        train_split="train-all-shuf",
        valid_split="dev-clean",
        num_classes=500,
        label_rate=50.0,
        exp_dir="hubert/exp-pretrain",
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
