"""Transcribe sound files with the TorchScript files of export.py (``<exp-dir>/jit/``).

    ./zipformer/jit_pretrained.py --model-dir zipformer/exp-ft/jit --decoding-method greedy_search a.flac b.wav

prints ``<file>: <transcript>`` per file. ``--model-dir`` holds
``{encoder,decoder,joiner}_jit_trace.pt`` (transducer) and/or ``model_jit_trace.pt`` (CTC) and
``tokens.txt`` (+ ``bpe.model``); nothing else of the training run is needed. Inputs are read
as pretrained.py reads them (any sampling rate, lhotse's fbank for fbank models).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, Optional

import torch

from icefall.asr.decode import CTC_METHODS, TRANSDUCER_METHODS
from icefall.asr.exported import JitAsrModel
from icefall.asr.pretrained import read_inputs, show_transcripts
from icefall.data.tokenizer import load_tokenizer


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Transcribe sound files with the TorchScript export of a fine-tuned model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, default=Path("zipformer/exp-ft/jit"), help="export.py's jit/ directory")
    parser.add_argument("--tokens-dir", type=Path, default=None, help="tokens.txt (+ bpe.model); default --model-dir")
    parser.add_argument("--decoding-method", default=None, choices=TRANSDUCER_METHODS + CTC_METHODS,
                        help="default: greedy_search for a transducer, else ctc-greedy-search")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("sound_files", nargs="+", type=Path, help="wav/flac/... files, any sampling rate")
    parser.set_defaults(**defaults)
    return parser


def transcribe(args: argparse.Namespace) -> Dict[str, str]:
    """{file: transcript} for ``args.sound_files``; also printed as ``file: transcript``."""
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    model = JitAsrModel(args.model_dir, device)
    tokenizer = load_tokenizer(args.tokens_dir or args.model_dir)
    x, x_lens = read_inputs(args.sound_files, model.input_type)
    hyps = model.decode(x, x_lens, args.decoding_method or model.default_method(), args.beam_size)
    return show_transcripts(args.sound_files, hyps, tokenizer)


def main(args: Optional[argparse.Namespace] = None) -> Dict[str, str]:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    return transcribe(args if args is not None else get_parser().parse_args())


if __name__ == "__main__":
    main()
