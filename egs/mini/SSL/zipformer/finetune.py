#!/usr/bin/env python3
"""Fine-tune the mini Zipformer with CTC on the 10-minute labeled split (letters).

    cd egs/mini/SSL
    ./zipformer/finetune.py --init-ckpt zipformer/exp-pretrain/epoch-3.pt --exp-dir zipformer/exp-ft
    ./zipformer/finetune.py --init-ckpt none --exp-dir zipformer/exp-scratch   # baseline

Use ``--use-transducer true`` (and ``--lang-dir data/lang_bpe_256``) for pruned RNN-T. Every
option: ``--help``; the logic is in ``icefall.asr.finetune``.
"""
from defaults import FINETUNE  # this directory's defaults.py

from icefall.asr.finetune import get_parser, main

if __name__ == "__main__":
    main(get_parser(**FINETUNE).parse_args())
