#!/usr/bin/env python3
"""Decode with the ONNX models of export.py (onnxruntime): sound files, or test splits with WER.

    cd egs/mini/SSL
    ./zipformer/onnx_decode.py --model-dir zipformer/exp-ft/onnx download/mini/test/*/*.flac
    ./zipformer/onnx_decode.py --model-dir zipformer/exp-ft/onnx --test-splits test dev

Every option: ``--help``; the logic is in ``icefall.asr.onnx_decode``.
"""
from icefall.asr.onnx_decode import get_parser, main

if __name__ == "__main__":
    main(get_parser(cuts_prefix="mini").parse_args())
