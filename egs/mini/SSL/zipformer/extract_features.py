#!/usr/bin/env python3
"""Per-utterance features of chosen layers of the pretrained mini Zipformer.

    cd egs/mini/SSL
    ./zipformer/extract_features.py --checkpoint zipformer/exp-pretrain/epoch-2.pt \
        --splits dev test --layers 0 2 4 --out-dir data/features-epoch2

Each output cut has ``custom["layer_<k>"]`` ((T, D) at 50 Hz, ``cut.load_custom("layer_2")``).
For k-means labels of iteration 2 use ``python -m icefall.ssl.labels --features layer``.
The logic is in ``icefall.ssl.extract``.
"""
import sys

from icefall.ssl.extract import main

if __name__ == "__main__":
    main(["--prefix", "mini", *sys.argv[1:]])
