"""Decode with the ONNX files of export.py and onnxruntime: sound files, or test splits with WER.

    ./zipformer/onnx_decode.py --model-dir zipformer/exp-ft/onnx a.flac b.wav
    ./zipformer/onnx_decode.py --model-dir zipformer/exp-ft/onnx --test-splits test dev

``--model-dir`` holds ``encoder/decoder/joiner.onnx`` (transducer) and/or ``model.onnx`` (CTC)
and ``tokens.txt``. The search code is the PyTorch one (``icefall.asr.search`` / ``ctc``): the
ONNX decoder and joiner are wrapped to look like the ``Decoder``/``Joiner`` modules, so ONNX and
PyTorch greedy search agree token for token when the networks agree. Split results go to
``<model-dir>/<method>/{recogs,errs,wer-summary}-<split>-onnx-<method>.txt``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from icefall.asr.ctc import ctc_greedy_search, ctc_prefix_beam_search
from icefall.asr.decode import BEAM_METHODS, CTC_METHODS, TRANSDUCER_METHODS, decode_dataloader, split_dataloaders
from icefall.asr.pretrained import read_inputs
from icefall.asr.search import greedy_search_batch, modified_beam_search
from icefall.data.datamodule import DataModule
from icefall.data.tokenizer import load_tokenizer
from icefall.eval.wer import save_results
from icefall.utils import setup_logger


class _OnnxDecoder:
    """``Decoder``'s decoding call (``need_pad=False``) over decoder.onnx, whose output is already
    projected by the joiner's decoder_proj."""

    def __init__(self, session, blank_id: int, context_size: int) -> None:
        self.session, self.blank_id, self.context_size = session, blank_id, context_size

    def __call__(self, y: Tensor, need_pad: bool = False) -> Tensor:
        """y: (N, context_size) -> (N, 1, joiner_dim)."""
        assert not need_pad, "decoder.onnx takes exactly context_size tokens"
        out = self.session.run(["decoder_out"], {"y": y.cpu().numpy().astype(np.int64)})[0]
        return torch.from_numpy(out).unsqueeze(1)


class _OnnxJoiner:
    """``Joiner`` over joiner.onnx; the projections are identities (encoder.onnx and decoder.onnx
    output projected vectors)."""

    def __init__(self, session) -> None:
        self.session = session

    @staticmethod
    def encoder_proj(x: Tensor) -> Tensor:
        return x

    decoder_proj = encoder_proj

    def __call__(self, encoder_out: Tensor, decoder_out: Tensor, project_input: bool = False) -> Tensor:
        """(N, joiner_dim) x 2 -> logits (N, vocab_size)."""
        feeds = {"encoder_out": encoder_out.cpu().numpy(), "decoder_out": decoder_out.cpu().numpy()}
        return torch.from_numpy(self.session.run(["logit"], feeds)[0])


class OnnxAsrModel:
    """The files of ``export.py`` in ``model_dir``, run with onnxruntime on CPU.

    Has the ``decoder``/``joiner`` attributes the transducer searches use.
    """

    def __init__(self, model_dir: Path, num_threads: int = 1) -> None:
        import onnxruntime as ort

        model_dir = Path(model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = num_threads

        def load(name: str):
            path = model_dir / f"{name}.onnx"
            if not path.is_file():
                return None
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        self.encoder, self.ctc_model = load("encoder"), load("model")
        if self.encoder is None and self.ctc_model is None:
            raise FileNotFoundError(f"{model_dir} has neither encoder.onnx nor model.onnx (run export.py)")
        self.use_transducer, self.use_ctc = self.encoder is not None, self.ctc_model is not None
        self.meta = (self.encoder or self.ctc_model).get_modelmeta().custom_metadata_map
        self.blank_id = int(self.meta["blank_id"])
        self.input_type = "wav" if self.meta["feature_type"] == "waveform" else "fbank"
        if self.use_transducer:
            self.decoder = _OnnxDecoder(load("decoder"), self.blank_id, int(self.meta["context_size"]))
            self.joiner = _OnnxJoiner(load("joiner"))

    @staticmethod
    def _run(session, names: List[str], x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        out, lens = session.run(names, {"x": x.float().numpy(), "x_lens": x_lens.to(torch.int64).numpy()})
        return torch.from_numpy(out), torch.from_numpy(lens)

    def run_encoder(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """(x, x_lens) -> (encoder_out (N, T', joiner_dim), encoder_out_lens)."""
        return self._run(self.encoder, ["encoder_out", "encoder_out_lens"], x, x_lens)

    def run_ctc(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """(x, x_lens) -> (log_probs (N, T', vocab_size), log_probs_len)."""
        return self._run(self.ctc_model, ["log_probs", "log_probs_len"], x, x_lens)

    def decode(self, x: Tensor, x_lens: Tensor, method: str, beam_size: int = 4) -> List[List[int]]:
        """Token ids of each utterance; x: (N, T, 80) fbank or (N, samples) waveform."""
        if method in TRANSDUCER_METHODS:
            if not self.use_transducer:
                raise ValueError(f"{method} needs encoder/decoder/joiner.onnx; use ctc-greedy-search")
            enc, lens = self.run_encoder(x, x_lens)
            if method == "greedy_search":
                return greedy_search_batch(self, enc, lens)
            return modified_beam_search(self, enc, lens, beam=beam_size)
        if not self.use_ctc:
            raise ValueError(f"{method} needs model.onnx; use greedy_search")
        log_probs, lens = self.run_ctc(x, x_lens)
        if method == "ctc-greedy-search":
            return ctc_greedy_search(log_probs, lens, self.blank_id)
        return ctc_prefix_beam_search(log_probs, lens, beam=beam_size, blank=self.blank_id)


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
    method = args.decoding_method or ("greedy_search" if model.use_transducer else "ctc-greedy-search")
    tokenizer = load_tokenizer(args.tokens_dir or args.model_dir)
    texts: Dict[str, str] = {}
    wers: Dict[str, float] = {}
    if args.sound_files:
        x, x_lens = read_inputs(args.sound_files, model.input_type)
        for path, hyp in zip(args.sound_files, model.decode(x, x_lens, method, args.beam_size)):
            texts[str(path)] = tokenizer.decode(hyp)
            print(f"{path}: {texts[str(path)]}")
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
