#!/usr/bin/env python3
"""Fine-tune and prune the mini Zipformer (CTC on letters) to a target sparsity.

    cd egs/mini/SSL
    # one pass: self-pinching gates while fine-tuning the pretrained encoder
    ./zipformer/prune.py --method gates --target-sparsity 0.7 \\
        --init-ckpt zipformer/exp-pretrain/epoch-2.pt --exp-dir zipformer/exp-gates-70
    # baselines: prune a fine-tuned dense model (pruned.pt of a --method none run), then fine-tune
    ./zipformer/prune.py --method uniform --target-sparsity 0.7 --dense-ckpt zipformer/exp-dense/pruned.pt \\
        --init-ckpt zipformer/exp-pretrain/epoch-2.pt --exp-dir zipformer/exp-ump-70
    ./zipformer/decode.py --checkpoint zipformer/exp-gates-70/pruned.pt --exp-dir zipformer/exp-gates-70

Writes ``sparsity.{md,png,json}``, ``pruned.pt``, ``compact.pt`` and ``prune-summary.json`` into
``--exp-dir``. The fine-tuning defaults are those of ``zipformer/finetune.py``; every option:
``--help``; the logic is in ``icefall.prune.finetune`` (docs/pruning.md).
"""
from icefall.prune.finetune import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="zipformer-tiny",
        frontend="fbank",
        encoder_overrides="frontend_layer3_channels=32",
        lang_dir="data/lang_char",
        use_ctc=True,
        use_transducer=False,
        decoder_dim=128,
        joiner_dim=128,
        exp_dir="zipformer/exp-prune",
        num_epochs=10,
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
        threshold_lr=5e-4,
    )
    main(parser.parse_args())
