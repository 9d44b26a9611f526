#!/usr/bin/env python3
"""Transcribe sound files with a fine-tuned Vietnamese model's pretrained.pt (from export.py).
Transcripts are normalised text (lower case, no punctuation), as the training labels.

    cd egs/vietnamese/SSL
    ./zipformer/pretrained.py --checkpoint zipformer/exp-ft-iter1/pretrained.pt a.wav b.mp3

Prints ``<file>: <transcript>``. Every option: ``--help``; the logic is in ``icefall.asr.pretrained``.
"""
from icefall.asr.pretrained import get_parser, main

if __name__ == "__main__":
    main(get_parser(checkpoint="zipformer/exp-ft-iter1/pretrained.pt", lang_dir="data/lang_bpe_2000").parse_args())
