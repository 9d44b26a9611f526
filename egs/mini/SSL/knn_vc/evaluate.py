#!/usr/bin/env python3
"""kNN-VC / kNN-TTS on the unseen test speakers: speaker similarity and ASR WER/CER.

    cd egs/mini/SSL
    ./knn_vc/evaluate.py --vocoders knn_vc/exp-fbank/epoch-28.pt knn_vc/exp-zipformer-l2/epoch-28.pt \\
        knn_vc/exp-spidr/epoch-28.pt --asr-checkpoint zipformer/exp-ft/pretrained.pt --ks 1 4 8 \\
        --asv-upstream zipformer/exp-data2vec/epoch-2.pt --out-dir knn_vc/eval

Speaker similarity: the ASV probe of ``--asv-upstream`` (trained on train-labeled on first use,
kept in ``<out-dir>/asv-probe``) and pooled log-mel statistics.

Logic and protocol: ``icefall.vc.evaluate``; docs/knn-vc.md.
"""
from icefall.vc.evaluate import get_parser, main

if __name__ == "__main__":
    main(get_parser().parse_args())
