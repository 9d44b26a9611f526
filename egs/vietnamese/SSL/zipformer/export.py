#!/usr/bin/env python3
"""Export a fine-tuned Vietnamese model: averaged pretrained.pt, TorchScript (jit/) and ONNX
(onnx/: the layout sherpa-onnx reads, with tokens.txt and bpe.model).

    cd egs/vietnamese/SSL
    ./zipformer/export.py --exp-dir zipformer/exp-ft-iter1 --epoch 60 --avg 10
    ./zipformer/onnx_pretrained.py --model-dir zipformer/exp-ft-iter1/onnx a.wav

Every option: ``--help``; the logic is in ``icefall.asr.export``.
"""
from icefall.asr.export import get_parser, main

if __name__ == "__main__":
    main(get_parser(exp_dir="zipformer/exp-ft-iter1", lang_dir="data/lang_bpe_2000").parse_args())
