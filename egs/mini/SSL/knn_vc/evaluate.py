#!/usr/bin/env python3
"""kNN-VC / kNN-TTS on the unseen test speakers: speaker similarity and ASR WER/CER.

    cd egs/mini/SSL
    ./knn_vc/evaluate.py --vocoders knn_vc/exp-fbank/epoch-28.pt knn_vc/exp-zipformer-l2/epoch-28.pt \\
        --asr-checkpoint zipformer/exp-ft/pretrained.pt --ks 1 4 8 --out-dir knn_vc/eval

Logic and protocol: ``icefall.vc.evaluate``; docs/knn-vc.md.
"""
from icefall.vc.evaluate import get_parser, main

if __name__ == "__main__":
    main(get_parser().parse_args())
