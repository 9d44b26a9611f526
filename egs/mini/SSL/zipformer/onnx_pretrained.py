#!/usr/bin/env python3
"""Transcribe 16 kHz wav files with the ONNX export of the mini fine-tuned Zipformer.

    cd egs/mini/SSL
    ./zipformer/onnx_pretrained.py --model-dir zipformer/exp-ft/onnx a.wav b.wav

The script is icefall/asr/onnx_pretrained.py, which needs only numpy, onnxruntime and
kaldi-native-fbank: copy that file next to the onnx/ directory to run it without this project.
(onnx_decode.py decodes test splits and flac files with the project installed.)
"""
from icefall.asr.onnx_pretrained import main

if __name__ == "__main__":
    main()
