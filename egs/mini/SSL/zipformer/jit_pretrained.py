#!/usr/bin/env python3
"""Transcribe sound files with the TorchScript export of the mini fine-tuned Zipformer.

    cd egs/mini/SSL
    ./zipformer/jit_pretrained.py --model-dir zipformer/exp-ft/jit download/mini/test/*/*.flac

Prints ``<file>: <transcript>``. Every option: ``--help``; the logic is in
``icefall.asr.jit_pretrained``.
"""
from icefall.asr.jit_pretrained import get_parser, main

if __name__ == "__main__":
    main(get_parser(model_dir="zipformer/exp-ft/jit").parse_args())
