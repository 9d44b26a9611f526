#!/usr/bin/env python3
"""Transcribe sound files with the TorchScript export of a fine-tuned Vietnamese model.

    cd egs/vietnamese/SSL
    ./zipformer/jit_pretrained.py --model-dir zipformer/exp-ft-iter1/jit a.wav b.mp3

Prints ``<file>: <transcript>``. Every option: ``--help``; the logic is in
``icefall.asr.jit_pretrained``.
"""
from icefall.asr.jit_pretrained import get_parser, main

if __name__ == "__main__":
    main(get_parser(model_dir="zipformer/exp-ft-iter1/jit").parse_args())
