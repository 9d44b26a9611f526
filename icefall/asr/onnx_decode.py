"""Decode with the ONNX files of export.py and onnxruntime: sound files, or test splits with WER.

    ./zipformer/onnx_decode.py --model-dir zipformer/exp-ft/onnx a.flac b.wav
    ./zipformer/onnx_decode.py --model-dir zipformer/exp-ft/onnx --test-splits test dev

``--model-dir`` holds ``encoder/decoder/joiner.onnx`` (transducer) and/or ``model.onnx`` (CTC)
and ``tokens.txt``. The search code is the PyTorch one (``icefall.asr.exported``), so ONNX and
PyTorch searches agree token for token when the networks agree. Split results go to
``<model-dir>/<method>/{recogs,errs,wer-summary}-<split>-onnx-<method>.txt``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from torch import Tensor

from icefall.asr.decode import BEAM_METHODS, CTC_METHODS, TRANSDUCER_METHODS, decode_dataloader, split_dataloaders
from icefall.asr.exported import OnnxAsrModel
from icefall.asr.pretrained import read_inputs, show_transcripts
from icefall.data.datamodule import DataModule
from icefall.data.tokenizer import load_tokenizer
from icefall.eval.wer import save_results
from icefall.utils import setup_logger


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Decode sound files or test splits with exported ONNX models",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="export.py's onnx/ directory")
    parser.add_argument("--tokens-dir", type=Path, default=None,
                        help="tokens.txt (+ bpe.model); default --model-dir")
    parser.add_argument("--decoding-method", default=None, choices=TRANSDUCER_METHODS + CTC_METHODS,
                        help="default: greedy_search for a transducer, else ctc-greedy-search")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--num-threads", type=int, default=1, help="onnxruntime threads")
    parser.add_argument("--test-splits", nargs="*", default=[], help="decode these splits and report WER")
    parser.add_argument("--res-dir", type=Path, default=None, help="default <model-dir>/<decoding-method>")
    parser.add_argument("sound_files", nargs="*", type=Path)
    DataModule.add_arguments(parser)
    parser.set_defaults(max_duration=200.0, num_workers=0)
    parser.set_defaults(**defaults)
    return parser


def onnx_decode(args: argparse.Namespace) -> Tuple[Dict[str, str], Dict[str, float]]:
    """Transcribe ``args.sound_files`` (printed as ``file: transcript``) and decode
    ``args.test_splits``; returns ({file: transcript}, {split: WER %})."""
    model = OnnxAsrModel(args.model_dir, args.num_threads)
    method = args.decoding_method or model.default_method()
    tokenizer = load_tokenizer(args.tokens_dir or args.model_dir)
    texts: Dict[str, str] = {}
    wers: Dict[str, float] = {}
    if args.sound_files:
        x, x_lens = read_inputs(args.sound_files, model.input_type)
        texts = show_transcripts(args.sound_files, model.decode(x, x_lens, method, args.beam_size), tokenizer)
    if args.test_splits:
        res_dir = Path(args.res_dir or Path(args.model_dir) / method)
        key = f"onnx-{method}" + (f"-beam-{args.beam_size}" if method in BEAM_METHODS else "")
        setup_logger(res_dir / f"log-decode-{key}")
        args.input_type = model.input_type

        def decode_fn(x: Tensor, x_lens: Tensor) -> List[List[int]]:
            return model.decode(x, x_lens, method, args.beam_size)

        for split, dl in split_dataloaders(args, tokenizer, args.test_splits):
            results = decode_dataloader(decode_fn, dl, tokenizer)
            wers[split] = save_results(res_dir, split, {key: results})[key]
            logging.info(f"{split} {key}: WER {wers[split]:.2f}% ({len(results)} utterances)")
            print(f"{split}\t{key}\tWER {wers[split]:.2f}%")
    return texts, wers


def main(args: Optional[argparse.Namespace] = None) -> Tuple[Dict[str, str], Dict[str, float]]:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    return onnx_decode(args if args is not None else get_parser().parse_args())


if __name__ == "__main__":
    main()
