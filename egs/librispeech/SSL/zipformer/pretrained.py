#!/usr/bin/env python3
"""Transcribe sound files with a fine-tuned LibriSpeech model's pretrained.pt (from export.py).

    cd egs/librispeech/SSL
    ./zipformer/pretrained.py --checkpoint zipformer/exp-ft100h/pretrained.pt \\
        --decoding-method modified_beam_search a.flac b.wav

Prints ``<file>: <transcript>``. Every option: ``--help``; the logic is in ``icefall.asr.pretrained``.
"""
from icefall.asr.pretrained import get_parser, main

if __name__ == "__main__":
    main(get_parser(checkpoint="zipformer/exp-ft100h/pretrained.pt", lang_dir="data/lang_bpe_500").parse_args())
