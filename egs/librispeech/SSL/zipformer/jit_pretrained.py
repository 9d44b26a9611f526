#!/usr/bin/env python3
"""Transcribe sound files with the TorchScript export of a fine-tuned LibriSpeech model.

    cd egs/librispeech/SSL
    ./zipformer/jit_pretrained.py --model-dir zipformer/exp-ft100h/jit a.flac b.wav

Prints ``<file>: <transcript>``. Every option: ``--help``; the logic is in
``icefall.asr.jit_pretrained``.
"""
from icefall.asr.jit_pretrained import get_parser, main

if __name__ == "__main__":
    main(get_parser(model_dir="zipformer/exp-ft100h/jit").parse_args())
