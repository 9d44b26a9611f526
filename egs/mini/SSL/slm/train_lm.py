#!/usr/bin/env python3
"""Train a unit LM (OPT, scaled down) on the deduplicated units of train-unlabeled.

    cd egs/mini/SSL
    ./slm/train_lm.py --train-units data/slm/km100/mini_cuts_train-unlabeled.jsonl.gz \\
        --valid-units data/slm/km100/mini_cuts_dev.jsonl.gz --num-units 100 --exp-dir slm/exp-km100

Checkpoints, resume and the averaged model as every recipe (docs/training.md); every option:
``--help``; the logic is in ``icefall.slm.train``.
"""
from icefall.slm.train import get_parser, main

if __name__ == "__main__":
    main(get_parser(num_epochs=5, max_tokens=4096, warmup_batches=200, save_every_n=500,
                    valid_interval=500, log_interval=50, tensorboard=False).parse_args())
