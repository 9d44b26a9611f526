#!/usr/bin/env python3
"""Transcribe 16 kHz wav files with the ONNX export of a fine-tuned Vietnamese model.

    cd egs/vietnamese/SSL
    ./zipformer/onnx_pretrained.py --model-dir zipformer/exp-ft-iter1/onnx a.wav b.wav

The script is icefall/asr/onnx_pretrained.py, which needs only numpy, onnxruntime and
kaldi-native-fbank: copy that file next to the onnx/ directory to run it without this project.
"""
from icefall.asr.onnx_pretrained import main

if __name__ == "__main__":
    main()
