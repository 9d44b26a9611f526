"""Transcribe sound files with a ``pretrained.pt`` from export.py (or any checkpoint's ``model``).

    ./zipformer/pretrained.py --checkpoint zipformer/exp-ft/pretrained.pt --lang-dir data/lang_char \\
        --decoding-method ctc-greedy-search a.flac b.wav

prints ``<file>: <transcript>`` per file. Any sampling rate is read (resampled to 16 kHz); fbank
models get lhotse's 80-bin fbank, as ``icefall.data.features`` computes it for the corpora.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from icefall.asr.decode import (
    CTC_METHODS,
    TRANSDUCER_METHODS,
    add_model_arguments,
    decode_batch,
    input_type,
    load_model,
)
from icefall.data.dataset import SAMPLE_RATE, pad_batch
from icefall.data.tokenizer import load_tokenizer


def read_inputs(paths: Sequence[Path], kind: str = "fbank") -> Tuple[Tensor, Tensor]:
    """Sound files -> a padded batch and its lengths (N,).

    ``kind`` "fbank": (N, T, 80) fbank at 100 Hz; "wav": (N, samples) 16 kHz waveform (first
    channel).
    """
    from lhotse import Recording

    from icefall.data.features import make_fbank_extractor

    extractor = make_fbank_extractor() if kind == "fbank" else None
    xs = []
    for path in paths:
        rec = Recording.from_file(path)
        if rec.sampling_rate != SAMPLE_RATE:
            rec = rec.resample(SAMPLE_RATE)
        samples = rec.load_audio()[0]
        x = extractor.extract(samples, SAMPLE_RATE) if extractor is not None else samples
        xs.append(torch.from_numpy(x).float())
    return pad_batch(xs)


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Transcribe sound files with a fine-tuned model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--decoding-method", default="greedy_search", choices=TRANSDUCER_METHODS + CTC_METHODS)
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("sound_files", nargs="+", type=Path, help="wav/flac/... files, any sampling rate")
    parser.set_defaults(**defaults)
    return parser


def transcribe(args: argparse.Namespace) -> Dict[str, str]:
    """{file: transcript} for ``args.sound_files``; also printed as ``file: transcript``."""
    model, model_params = load_model(args, purpose="pretrained.py")
    tokenizer = load_tokenizer(args.lang_dir)
    x, x_lens = read_inputs(args.sound_files, input_type(model_params))
    hyps = decode_batch(model, x, x_lens, args.decoding_method, args.beam_size)
    return show_transcripts(args.sound_files, hyps, tokenizer)


def show_transcripts(paths: Sequence[Path], hyps: Sequence[Sequence[int]], tokenizer) -> Dict[str, str]:
    """{file: transcript} of the token ids ``hyps``, each printed as ``file: transcript``."""
    out = {str(p): tokenizer.decode(h) for p, h in zip(paths, hyps)}
    for path, text in out.items():
        print(f"{path}: {text}")
    return out


def main(args: Optional[argparse.Namespace] = None) -> Dict[str, str]:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    return transcribe(args if args is not None else get_parser().parse_args())


if __name__ == "__main__":
    main()
