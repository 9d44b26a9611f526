#!/usr/bin/env python3
"""Export a fine-tuned LibriSpeech model: averaged pretrained.pt, TorchScript (jit/) and ONNX
(onnx/: the layout sherpa-onnx reads, with tokens.txt).

    cd egs/librispeech/SSL
    ./zipformer/export.py --exp-dir zipformer/exp-ft100h --epoch 50 --avg 10 --use-averaged-model true
    ./zipformer/pretrained.py --checkpoint zipformer/exp-ft100h/pretrained.pt a.flac
    ./zipformer/jit_pretrained.py --model-dir zipformer/exp-ft100h/jit a.flac
    ./zipformer/onnx_pretrained.py --model-dir zipformer/exp-ft100h/onnx a.wav

Every option: ``--help``; the logic is in ``icefall.asr.export``.
"""
from icefall.asr.export import get_parser, main

if __name__ == "__main__":
    main(get_parser(exp_dir="zipformer/exp-ft100h", lang_dir="data/lang_bpe_500").parse_args())
