#!/usr/bin/env python3
"""kNN-VC: convert a wav to the voice of a target speaker given reference wavs.

    cd egs/mini/SSL
    ./knn_vc/convert.py --vocoder knn_vc/exp-fbank/epoch-28.pt --source a.flac \\
        --reference download/mini/test/en902/*.flac --k 4 --output a-as-en902.wav

Logic: ``icefall.vc.convert``.
"""
from icefall.vc.convert import get_convert_parser, main

if __name__ == "__main__":
    main(get_convert_parser().parse_args())
