"""Recognition with the exported modules of ``export.py``: ONNX (onnxruntime) or TorchScript.

Both exports hold the same modules with the same inputs and outputs: ``encoder``, ``decoder``
and ``joiner`` for a transducer, ``model`` for CTC (see ``icefall.asr.export``). The search code
is the PyTorch one (``icefall.asr.search`` / ``ctc``): the exported decoder and joiner are
wrapped to look like the ``Decoder``/``Joiner`` modules, so exported and PyTorch searches agree
token for token when the networks agree.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from icefall.asr.ctc import ctc_greedy_search, ctc_prefix_beam_search
from icefall.asr.decode import TRANSDUCER_METHODS
from icefall.asr.search import greedy_search_batch, modified_beam_search

TRANSDUCER_MODULES = ("encoder", "decoder", "joiner")
CTC_MODULE = "model"
JIT_METADATA = "metadata.json"  # the extra file of every TorchScript export holding the metadata


class _ExportedDecoder:
    """``Decoder``'s decoding call (``need_pad=False``) over an exported decoder, whose output is
    already projected by the joiner's decoder_proj."""

    def __init__(self, run: Callable[[Tensor], Tensor], blank_id: int, context_size: int) -> None:
        self.run, self.blank_id, self.context_size = run, blank_id, context_size

    def __call__(self, y: Tensor, need_pad: bool = False) -> Tensor:
        """y: (N, context_size) -> (N, 1, joiner_dim)."""
        assert not need_pad, "the exported decoder takes exactly context_size tokens"
        return self.run(y.to(torch.int64)).unsqueeze(1)


class _ExportedJoiner:
    """``Joiner`` over an exported joiner; the projections are identities (the exported encoder
    and decoder output projected vectors)."""

    def __init__(self, run: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.run = run

    @staticmethod
    def encoder_proj(x: Tensor) -> Tensor:
        return x

    decoder_proj = encoder_proj

    def __call__(self, encoder_out: Tensor, decoder_out: Tensor, project_input: bool = False) -> Tensor:
        """(N, joiner_dim) x 2 -> logits (N, vocab_size)."""
        return self.run(encoder_out, decoder_out)


class ExportedAsrModel:
    """Decoding over exported modules. Subclasses load them and set ``meta`` (the export's
    metadata: blank_id, context_size, feature_type, ...) and the callables ``_encoder``,
    ``_decoder``, ``_joiner`` (transducer) and/or ``_ctc`` (all taking and returning tensors).

    Has the ``decoder``/``joiner`` attributes the transducer searches use.
    """

    meta: Dict[str, str]
    _encoder = _decoder = _joiner = _ctc = None

    def _setup(self, where: Path) -> None:
        self.use_transducer, self.use_ctc = self._encoder is not None, self._ctc is not None
        if not (self.use_transducer or self.use_ctc):
            raise FileNotFoundError(f"{where} has neither the encoder/decoder/joiner nor the CTC model "
                                    "(run export.py)")
        self.blank_id = int(self.meta["blank_id"])
        self.input_type = "wav" if self.meta["feature_type"] == "waveform" else "fbank"
        if self.use_transducer:
            self.decoder = _ExportedDecoder(self._decoder, self.blank_id, int(self.meta["context_size"]))
            self.joiner = _ExportedJoiner(self._joiner)

    def run_encoder(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """(x, x_lens) -> (encoder_out (N, T', joiner_dim), encoder_out_lens)."""
        return self._encoder(x.float(), x_lens.to(torch.int64))

    def run_ctc(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """(x, x_lens) -> (log_probs (N, T', vocab_size), log_probs_len)."""
        return self._ctc(x.float(), x_lens.to(torch.int64))

    def decode(self, x: Tensor, x_lens: Tensor, method: str, beam_size: int = 4) -> List[List[int]]:
        """Token ids of each utterance; x: (N, T, 80) fbank or (N, samples) waveform."""
        if method in TRANSDUCER_METHODS:
            if not self.use_transducer:
                raise ValueError(f"{method} needs the exported encoder/decoder/joiner; use ctc-greedy-search")
            enc, lens = self.run_encoder(x, x_lens)
            if method == "greedy_search":
                return greedy_search_batch(self, enc, lens)
            return modified_beam_search(self, enc, lens, beam=beam_size)
        if not self.use_ctc:
            raise ValueError(f"{method} needs the exported CTC model; use greedy_search")
        log_probs, lens = self.run_ctc(x, x_lens)
        if method == "ctc-greedy-search":
            return ctc_greedy_search(log_probs, lens, self.blank_id)
        return ctc_prefix_beam_search(log_probs, lens, beam=beam_size, blank=self.blank_id)

    def default_method(self) -> str:
        return "greedy_search" if self.use_transducer else "ctc-greedy-search"


class OnnxAsrModel(ExportedAsrModel):
    """``<model_dir>/{encoder,decoder,joiner}.onnx`` and/or ``model.onnx``, run with onnxruntime
    on CPU; the metadata is that of the ONNX files."""

    def __init__(self, model_dir: Path, num_threads: int = 1) -> None:
        import onnxruntime as ort

        model_dir = Path(model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = num_threads
        sessions = {}
        for name in TRANSDUCER_MODULES + (CTC_MODULE,):
            path = model_dir / f"{name}.onnx"
            if path.is_file():
                sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def runner(name: str, inputs: List[str], outputs: List[str]) -> Optional[Callable]:
            if name not in sessions:
                return None

            def run(*args: Tensor):
                feeds = {k: v.cpu().numpy() for k, v in zip(inputs, args)}
                out = [torch.from_numpy(np.asarray(o)) for o in sessions[name].run(outputs, feeds)]
                return out[0] if len(out) == 1 else tuple(out)

            return run

        self._encoder = runner("encoder", ["x", "x_lens"], ["encoder_out", "encoder_out_lens"])
        self._decoder = runner("decoder", ["y"], ["decoder_out"])
        self._joiner = runner("joiner", ["encoder_out", "decoder_out"], ["logit"])
        self._ctc = runner("model", ["x", "x_lens"], ["log_probs", "log_probs_len"])
        self.meta = next(iter(sessions.values())).get_modelmeta().custom_metadata_map if sessions else {}
        self._setup(model_dir)


class JitAsrModel(ExportedAsrModel):
    """``<model_dir>/{encoder,decoder,joiner}_jit_trace.pt`` and/or ``model_jit_trace.pt``
    (TorchScript, any device); the metadata is each file's ``metadata.json`` extra file."""

    def __init__(self, model_dir: Path, device: torch.device = torch.device("cpu")) -> None:
        model_dir = Path(model_dir)
        modules, self.meta = {}, {}
        for name in TRANSDUCER_MODULES + (CTC_MODULE,):
            path = model_dir / f"{name}_jit_trace.pt"
            if path.is_file():
                extra = {JIT_METADATA: ""}
                modules[name] = torch.jit.load(str(path), map_location=device, _extra_files=extra).eval()
                if extra[JIT_METADATA]:
                    self.meta = json.loads(extra[JIT_METADATA])
        if modules and not self.meta:
            raise ValueError(f"{model_dir}: the TorchScript files carry no {JIT_METADATA} (re-run export.py)")

        def runner(name: str) -> Optional[Callable]:
            if name not in modules:
                return None

            @torch.no_grad()
            def run(*args: Tensor):
                return modules[name](*(a.to(device) for a in args))

            return run

        self._encoder, self._decoder, self._joiner, self._ctc = (runner(n) for n in TRANSDUCER_MODULES + (CTC_MODULE,))
        self._setup(model_dir)
