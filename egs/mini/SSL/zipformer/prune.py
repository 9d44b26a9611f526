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
``--exp-dir``. The fine-tuning defaults are ``zipformer/defaults.py``'s, as for finetune.py; every option:
``--help``; the logic is in ``icefall.prune.finetune`` (docs/pruning.md).
"""
from defaults import FINETUNE  # this directory's defaults.py

from icefall.prune.finetune import get_parser, main

if __name__ == "__main__":
    parser = get_parser(**{**FINETUNE, "exp_dir": "zipformer/exp-prune", "num_epochs": 10, "threshold_lr": 5e-4})
    main(parser.parse_args())
