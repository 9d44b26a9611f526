"""Export a fine-tuned AsrModel: averaged ``pretrained.pt``, TorchScript and ONNX (sherpa-onnx layout).

    ./zipformer/export.py --epoch 20 --avg 5 --use-averaged-model true [--onnx true] [--jit true]

writes into ``--exp-dir``:

- ``pretrained.pt``: ``{"model": state_dict, "params": params}``; decode.py and pretrained.py
  read it with ``--checkpoint``.
- ``onnx/``: what sherpa-onnx's offline recognizer reads, plus ``tokens.txt`` (and ``bpe.model``):
  transducer -> ``encoder.onnx`` (``x``, ``x_lens`` -> ``encoder_out`` (N, T', joiner_dim) already
  projected by ``joiner.encoder_proj``, ``encoder_out_lens``), ``decoder.onnx`` (``y`` (N,
  context_size) int64 -> ``decoder_out`` (N, joiner_dim), projected), ``joiner.onnx``
  (``encoder_out``, ``decoder_out`` -> ``logit`` (N, vocab_size)); CTC -> ``model.onnx`` (``x``,
  ``x_lens`` -> ``log_probs`` (N, T', vocab_size), ``log_probs_len``). A model with both heads
  gets all four. N and T are dynamic. ``x`` is (N, T, 80) fbank at 100 Hz for the fbank front end
  and (N, samples) 16 kHz waveform for the CNN front end (``feature_type`` in the metadata; sherpa
  -onnx itself only feeds fbank). Metadata: model_type, version, comment, vocab_size,
  context_size, blank_id, feature_type, feature_dim, sample_rate, frame_rate, subsampling_factor.
- ``jit/``: the same four modules traced with TorchScript (``<name>_jit_trace.pt``, same inputs and
  outputs as the ONNX files, the metadata as the extra file ``metadata.json``), plus ``tokens.txt``.

The Zipformer cannot be scripted (``torch.jit.script``): its training-time regularisers draw
Python random numbers. It is traced, with two internals swapped for trace-friendly equivalents
while exporting (:func:`traceable_zipformer`); every exported module is then checked against the
eager PyTorch model on random inputs of two other lengths, and the max abs differences logged.
ONNX uses the TorchScript-based exporter (``dynamo=False``), which needs no extra package.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from icefall.asr.decode import add_model_arguments, input_type, load_model
from icefall.asr.finetune import FRAME_RATE
from icefall.asr.model import AsrModel
from icefall.utils import AttributeDict, atomic_write_path, setup_logger, str2bool

SAMPLE_RATE = 16000
FBANK_RATE = 100
NUM_MEL_BINS = 80
VERSION = "1"


# ---------------------------------------------------------------------------------------------
# Trace-friendly Zipformer internals


def _rel_to_abs_gather(pos_scores: Tensor) -> Tensor:
    """Same result as ``zipformer.rel_to_abs`` with a gather instead of a flattened view (whose
    sizes a trace would freeze at the example's length)."""
    T = pos_scores.shape[-2]
    i = torch.arange(T, device=pos_scores.device)
    idx = (T - 1) - i.unsqueeze(1) + i.unsqueeze(0)  # (T, T): column of offset j - i in row i
    return torch.gather(pos_scores, -1, idx.expand(pos_scores.shape[:-1] + (T,)))


def _rel_pos_encoding_traced(self, T: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``CompactRelPositionalEncoding.forward`` computed for the actual T (no cache, which a trace
    would freeze as a constant, and no strided in-place writes)."""
    x = torch.arange(-(T - 1), T, device=device).float().unsqueeze(1)
    freqs = 1 + torch.arange(self.embed_dim // 2, device=device)
    c = self.embed_dim**0.5
    x = c * x.sign() * ((x.abs() + c).log() - math.log(c))
    x = (x / (self.length_factor * self.embed_dim / (2.0 * math.pi))).atan()
    # interleave cos/sin as pe[:, 0::2] / pe[:, 1::2]; the last channel is the constant 1
    pe = torch.stack([(x * freqs).cos(), (x * freqs).sin()], dim=-1).reshape(x.shape[0], self.embed_dim)
    pe = torch.cat([pe[:, :-1], torch.ones_like(pe[:, :1])], dim=1)
    return self.dropout(pe.to(dtype).unsqueeze(0))


@contextmanager
def traceable_zipformer():
    """Within the block, the Zipformer computes the same values with traceable ops."""
    from icefall.nn import zipformer

    saved = zipformer.rel_to_abs, zipformer.CompactRelPositionalEncoding.forward
    zipformer.rel_to_abs = _rel_to_abs_gather
    zipformer.CompactRelPositionalEncoding.forward = _rel_pos_encoding_traced
    try:
        yield
    finally:
        zipformer.rel_to_abs, zipformer.CompactRelPositionalEncoding.forward = saved


# ---------------------------------------------------------------------------------------------
# The exported modules


class EncoderExport(nn.Module):
    """(x, x_lens) -> (encoder_out (N, T', joiner_dim) projected for the joiner, encoder_out_lens)."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.encoder, self.encoder_proj = model.encoder, model.joiner.encoder_proj

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        out, lens = self.encoder(x, x_lens)
        return self.encoder_proj(out), lens


class DecoderExport(nn.Module):
    """y (N, context_size) int64 (-1 = no token yet) -> decoder_out (N, joiner_dim), projected."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.decoder, self.decoder_proj = model.decoder, model.joiner.decoder_proj

    def forward(self, y: Tensor) -> Tensor:
        return self.decoder_proj(self.decoder(y, need_pad=False).squeeze(1))


class JoinerExport(nn.Module):
    """(encoder_out (N, joiner_dim), decoder_out (N, joiner_dim)) -> logit (N, vocab_size)."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.joiner(encoder_out, decoder_out, project_input=False)


class CtcExport(nn.Module):
    """(x, x_lens) -> (log_probs (N, T', vocab_size), log_probs_len)."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.encoder, self.ctc_output = model.encoder, model.ctc_output

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        out, lens = self.encoder(x, x_lens)
        return self.ctc_output(out), lens


@dataclass
class ExportSpec:
    """One exported module: names and dynamic axes of its inputs/outputs, and random inputs.

    ``make_inputs(size, seed)``: ``size`` is a length (seconds x 100) for encoders and a batch
    size for the decoder/joiner.
    """

    name: str
    module: nn.Module
    input_names: List[str]
    output_names: List[str]
    dynamic_axes: Dict[str, Dict[int, str]]
    make_inputs: Callable[[int, int], Tuple[Tensor, ...]]
    trace_size: int = 200
    check_sizes: Tuple[int, ...] = (123, 345)


def random_encoder_input(frontend: str, centiseconds: int, seed: int, batch: int = 2) -> Tuple[Tensor, Tensor]:
    """Random (x, x_lens) of ``centiseconds`` / 100 s: (N, T, 80) fbank or (N, samples) waveform.

    The first utterance fills the batch, the others are shorter (padding is exercised).
    """
    g = torch.Generator().manual_seed(seed)
    n = centiseconds * SAMPLE_RATE // FBANK_RATE if frontend == "cnn" else centiseconds
    x = torch.randn((batch, n) if frontend == "cnn" else (batch, n, NUM_MEL_BINS), generator=g)
    if frontend == "cnn":
        x = 0.1 * x
    lens = torch.tensor([n] + [max(n * (3 + i) // (4 + i), 1) for i in range(batch - 1)], dtype=torch.int64)
    return x, lens


def export_specs(model: AsrModel, model_params: AttributeDict) -> List[ExportSpec]:
    """What to export for this model: the transducer trio and/or the CTC model."""
    frontend = model_params.get("frontend", "fbank")
    time_axis = "S" if frontend == "cnn" else "T"
    enc_axes = {"x": {0: "N", 1: time_axis}, "x_lens": {0: "N"}}

    def enc_inputs(size: int, seed: int) -> Tuple[Tensor, Tensor]:
        # batch 2 for tracing (seed 0), then 3 and 1: N is dynamic too
        return random_encoder_input(frontend, size, seed, batch=1 + (seed + 1) % 3)

    specs = []
    if model.use_transducer:
        J = model.joiner.output_linear.in_features
        C, V = model.decoder.context_size, model.vocab_size

        def dec_inputs(n: int, seed: int) -> Tuple[Tensor]:
            y = torch.randint(0, V, (n, C), generator=torch.Generator().manual_seed(seed))
            y[0, :-1] = -1  # the start-of-utterance context
            return (y,)

        def join_inputs(n: int, seed: int) -> Tuple[Tensor, Tensor]:
            g = torch.Generator().manual_seed(seed)
            return torch.randn(n, J, generator=g), torch.randn(n, J, generator=g)

        specs += [
            ExportSpec("encoder", EncoderExport(model), ["x", "x_lens"], ["encoder_out", "encoder_out_lens"],
                       {**enc_axes, "encoder_out": {0: "N", 1: "T"}, "encoder_out_lens": {0: "N"}}, enc_inputs),
            ExportSpec("decoder", DecoderExport(model), ["y"], ["decoder_out"],
                       {"y": {0: "N"}, "decoder_out": {0: "N"}}, dec_inputs, trace_size=2, check_sizes=(1, 7)),
            ExportSpec("joiner", JoinerExport(model), ["encoder_out", "decoder_out"], ["logit"],
                       {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}},
                       join_inputs, trace_size=2, check_sizes=(1, 7)),
        ]
    if model.use_ctc:
        axes = {**enc_axes, "log_probs": {0: "N", 1: "T"}, "log_probs_len": {0: "N"}}
        specs.append(ExportSpec("model", CtcExport(model), ["x", "x_lens"], ["log_probs", "log_probs_len"],
                                axes, enc_inputs))
    for spec in specs:
        spec.module.eval()
    return specs


def _origin(model_params: AttributeDict) -> str:
    """Where the encoder came from, for the metadata: SSL pretraining or nothing."""
    init = str(model_params.get("init_ckpt", "none"))
    if init in ("", "none"):
        return "trained from scratch"
    objective = model_params.get("init_objective")
    return f"SSL pretrained ({objective})" if objective else "SSL pretrained"


def model_metadata(model: AsrModel, model_params: AttributeDict) -> Dict[str, str]:
    """Key/value metadata stored in every ONNX file (values are strings, as ONNX requires)."""
    wav = input_type(model_params) == "wav"
    encoder = str(model_params.get("encoder", "zipformer"))
    family = "zipformer2" if encoder.startswith("zipformer") else encoder.split("-")[0]  # e.g. hubert
    heads = "+".join(h for h, on in (("transducer", model.use_transducer), ("CTC", model.use_ctc)) if on)
    meta = {
        "model_type": family if model.use_transducer else f"{family}_ctc",
        "version": VERSION,
        "model_author": "icefall-ssl",
        "comment": f"non-streaming {encoder} ({model_params.get('frontend')} front end), "
                   f"{_origin(model_params)}, fine-tuned with {heads}",
        "vocab_size": model.vocab_size,
        "blank_id": model.blank_id,
        "context_size": model.decoder.context_size if model.use_transducer else 0,
        "feature_type": "waveform" if wav else "fbank",
        "feature_dim": 1 if wav else NUM_MEL_BINS,
        "sample_rate": SAMPLE_RATE,
        "frame_rate": FRAME_RATE,
        "subsampling_factor": int((SAMPLE_RATE if wav else FBANK_RATE) / FRAME_RATE),
    }
    return {k: str(v) for k, v in meta.items()}


@contextmanager
def exporting():
    """Trace-friendly Zipformer, no autograd, and no tracer warnings: the tracer warns about every
    Python int/bool it sees, and the multi-length checks are what shows the trace is right."""
    with warnings.catch_warnings(), traceable_zipformer(), torch.no_grad():
        for category in (torch.jit.TracerWarning, DeprecationWarning, FutureWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category)
        yield


def max_abs_diff(got: Sequence, ref: Sequence[Tensor]) -> float:
    """Largest |got - ref| over float outputs; integer outputs (lengths) must match exactly
    (inf otherwise)."""
    worst = 0.0
    for a, b in zip(got, ref):
        a = torch.as_tensor(a)
        if a.shape != b.shape:
            return math.inf
        if b.is_floating_point():
            worst = max(worst, (a.float() - b.float()).abs().max().item())
        elif not torch.equal(a.to(b.dtype), b):
            return math.inf
    return worst


def _as_tuple(x) -> Tuple[Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def check_exported(
    specs: Sequence[ExportSpec], run: Callable[[ExportSpec, Tuple[Tensor, ...]], Sequence]
) -> Dict[str, float]:
    """Max abs difference to the eager model of ``run(spec, inputs)`` at each check size.

    Returns {"<name>@<size>": diff}. The eager reference runs outside :func:`traceable_zipformer`,
    so the swapped internals are checked too.
    """
    diffs = {}
    for spec in specs:
        for seed, size in enumerate(spec.check_sizes, start=1):
            inputs = spec.make_inputs(size, seed)
            with torch.no_grad():
                ref = _as_tuple(spec.module(*inputs))
            diffs[f"{spec.name}@{size}"] = max_abs_diff(run(spec, inputs), ref)
    return diffs


# ---------------------------------------------------------------------------------------------
# TorchScript


def export_torchscript(model: AsrModel, model_params: AttributeDict, out_dir: Path) -> Dict[str, float]:
    """Trace every module into ``out_dir/<name>_jit_trace.pt`` (with the ONNX files' metadata as
    the extra file ``metadata.json``); returns the check diffs."""
    from icefall.asr.exported import JIT_METADATA

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = export_specs(model, model_params)
    meta = json.dumps(model_metadata(model, model_params))
    traced = {}
    with exporting():
        for spec in specs:
            m = torch.jit.trace(spec.module, spec.make_inputs(spec.trace_size, 0), check_trace=False)
            path = out_dir / f"{spec.name}_jit_trace.pt"
            torch.jit.save(m, str(path), _extra_files={JIT_METADATA: meta})
            traced[spec.name] = torch.jit.load(str(path))
            logging.info(f"Saved {path}")

    def run(spec: ExportSpec, inputs: Tuple[Tensor, ...]):
        with torch.no_grad():
            return _as_tuple(traced[spec.name](*inputs))

    return check_exported(specs, run)


# ---------------------------------------------------------------------------------------------
# ONNX


def add_onnx_metadata(path: Path, meta: Dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    onnx.helper.set_model_props(m, meta)
    onnx.save(m, str(path))


def export_onnx(model: AsrModel, model_params: AttributeDict, out_dir: Path, opset: int = 17) -> Dict[str, float]:
    """Write ``out_dir/{encoder,decoder,joiner}.onnx`` and/or ``out_dir/model.onnx`` with
    metadata; returns the max abs differences to PyTorch checked with onnxruntime."""
    import onnxruntime as ort

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = export_specs(model, model_params)
    meta = model_metadata(model, model_params)
    with exporting():
        for spec in specs:
            path = out_dir / f"{spec.name}.onnx"
            torch.onnx.export(
                spec.module, spec.make_inputs(spec.trace_size, 0), str(path),
                input_names=spec.input_names, output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes, opset_version=opset, dynamo=False,
            )
            add_onnx_metadata(path, meta)
            logging.info(f"Saved {path}")

    sessions = {s.name: ort.InferenceSession(str(out_dir / f"{s.name}.onnx"), providers=["CPUExecutionProvider"])
                for s in specs}

    def run(spec: ExportSpec, inputs: Tuple[Tensor, ...]):
        feeds = {n: t.numpy() for n, t in zip(spec.input_names, inputs)}
        return sessions[spec.name].run(spec.output_names, feeds)

    return check_exported(specs, run)


def copy_tokens(lang_dir: Path, out_dir: Path) -> None:
    """tokens.txt (what sherpa-onnx reads) and bpe.model (if any) next to the exported files.

    A letter model's word separator ``|`` is written as ``▁``, which sherpa-onnx (like
    sentencepiece) turns into a space; our tokenizer and onnx_pretrained.py read either."""
    from icefall.data.tokenizer import EXPORT_WORD_SEP, WORD_SEP, read_tokens

    lang_dir, out_dir = Path(lang_dir), Path(out_dir)
    if (lang_dir / "bpe.model").is_file():
        shutil.copy(lang_dir / "bpe.model", out_dir / "bpe.model")
        shutil.copy(lang_dir / "tokens.txt", out_dir / "tokens.txt")
    elif (lang_dir / "tokens.txt").is_file():
        table = read_tokens(lang_dir / "tokens.txt")
        if EXPORT_WORD_SEP in table:
            raise ValueError(f"{lang_dir}/tokens.txt: a letter set may not hold {EXPORT_WORD_SEP!r}")
        text = "".join(f"{EXPORT_WORD_SEP if sym == WORD_SEP else sym} {i}\n" for sym, i in table.items())
        tmp = atomic_write_path(out_dir / "tokens.txt")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / "tokens.txt")


# ---------------------------------------------------------------------------------------------
# pretrained.pt and the command line


def save_pretrained(model: AsrModel, model_params: AttributeDict, filename: Path) -> None:
    """``{"model": state_dict, "params": params}``: all that decoding needs, no optimizer state."""
    from icefall.checkpoint import atomic_torch_save, to_plain

    atomic_torch_save({"model": model.state_dict(), "params": to_plain(dict(model_params))}, filename)
    logging.info(f"Saved {filename}")


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a fine-tuned model: pretrained.pt, TorchScript, ONNX",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_arguments(parser)
    g = parser.add_argument_group("export")
    g.add_argument("--jit", type=str2bool, default=True, help="TorchScript (traced) into <exp-dir>/jit")
    g.add_argument("--onnx", type=str2bool, default=True, help="ONNX + tokens.txt into <exp-dir>/onnx")
    g.add_argument("--opset", type=int, default=17)
    parser.set_defaults(**defaults)
    return parser


def export(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    """Everything the flags ask for; returns {"jit"/"onnx": {"<name>@<size>": max abs diff}}."""
    exp_dir = Path(args.exp_dir)
    setup_logger(exp_dir / "log" / "log-export")
    model, model_params = load_model(args, purpose="export.py")
    model = model.float()
    target = exp_dir / "pretrained.pt"
    if args.checkpoint is None or Path(args.checkpoint).resolve() != target.resolve():
        save_pretrained(model, model_params, target)
    report = {}
    if args.jit:
        report["jit"] = export_torchscript(model, model_params, exp_dir / "jit")
        copy_tokens(args.lang_dir, exp_dir / "jit")
    if args.onnx:
        report["onnx"] = export_onnx(model, model_params, exp_dir / "onnx", args.opset)
        copy_tokens(args.lang_dir, exp_dir / "onnx")
    for kind, diffs in report.items():
        for name, d in diffs.items():
            logging.info(f"{kind} {name}: max abs diff to PyTorch {d:.3g}")
        worst = max(diffs.values())
        if worst > 1e-3:
            logging.warning(f"{kind}: max abs diff {worst:.3g} > 1e-3: the export may be wrong")
    return report


def main(args: Optional[argparse.Namespace] = None) -> Dict[str, Dict[str, float]]:
    return export(args if args is not None else get_parser().parse_args())


if __name__ == "__main__":
    main()
