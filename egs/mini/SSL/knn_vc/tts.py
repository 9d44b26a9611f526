#!/usr/bin/env python3
"""kNN-TTS: speak a text with espeak-ng, converted to a target voice given reference wavs.

    cd egs/mini/SSL
    ./knn_vc/tts.py --vocoder knn_vc/exp-fbank/epoch-28.pt --text "ISABEL REMEMBERED THE KNIFE" \\
        --reference download/mini/test/en902/*.flac --lam 1.0 --output isabel-en902.wav

Logic: ``icefall.vc.convert``.
"""
from icefall.vc.convert import get_tts_parser, main

if __name__ == "__main__":
    main(get_tts_parser().parse_args())
