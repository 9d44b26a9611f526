#!/usr/bin/env python3
"""Export the mini fine-tuned Zipformer: averaged pretrained.pt, TorchScript (jit/) and ONNX
(onnx/: the layout sherpa-onnx reads, with tokens.txt).

    cd egs/mini/SSL
    ./zipformer/export.py --epoch 20 --avg 5
    ./zipformer/decode.py --checkpoint zipformer/exp-ft/pretrained.pt
    ./zipformer/onnx_decode.py --model-dir zipformer/exp-ft/onnx --test-splits test

Every option: ``--help``; the logic is in ``icefall.asr.export``.
"""
from icefall.asr.export import get_parser, main

if __name__ == "__main__":
    parser = get_parser(exp_dir="zipformer/exp-ft", lang_dir="data/lang_char")
    main(parser.parse_args())
