#!/usr/bin/env python3
"""Transcribe sound files with the mini fine-tuned Zipformer's pretrained.pt (from export.py).

    cd egs/mini/SSL
    ./zipformer/pretrained.py --checkpoint zipformer/exp-ft/pretrained.pt download/mini/test/*/*.flac

Prints ``<file>: <transcript>``. Every option: ``--help``; the logic is in ``icefall.asr.pretrained``.
"""
from icefall.asr.pretrained import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        checkpoint="zipformer/exp-ft/pretrained.pt",
        lang_dir="data/lang_char",
        decoding_method="ctc-greedy-search",
    )
    main(parser.parse_args())
