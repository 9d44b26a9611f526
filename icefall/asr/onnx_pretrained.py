#!/usr/bin/env python3
"""Transcribe 16 kHz wav files with the ONNX export of a fine-tuned model. Standalone.

This file needs only numpy, onnxruntime and kaldi-native-fbank (and the Python standard
library): copy it next to an exported model and run it anywhere.

    python3 onnx_pretrained.py --model-dir exp-ft/onnx a.wav b.wav
    python3 -m icefall.asr.onnx_pretrained --model-dir exp-ft/onnx --decoding-method ctc-greedy-search a.wav

prints ``<file>: <transcript>`` per file. ``--model-dir`` is export.py's ``onnx/``:
``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` (transducer) and/or ``model.onnx`` (CTC), and
``tokens.txt``. The metadata of the ONNX files say what the model reads: 80-bin fbank at 100 Hz
(computed here with kaldi-native-fbank, set up as lhotse's fbank that the training cuts used) or
the 16 kHz waveform (CNN front end). Search: greedy, one symbol per frame at most, as the
project's ``greedy_search`` and ``ctc-greedy-search`` (decode.py gives the same tokens for the
same features). Input: RIFF wav, PCM 16/32-bit or float, mono (first channel otherwise), 16 kHz.
"""
import argparse
import struct
import sys
import wave
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import kaldi_native_fbank as knf
import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000
SPECIALS = 3  # ids 0, 1, 2: <blk>, <sos/eos>, <unk>; never printed
WORD_SEP = "|"  # between the words of a letter (character) model's tokens


def read_wav(path: Path) -> np.ndarray:
    """Samples of the first channel as float32 in [-1, 1]: (num_samples,)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            data = w.readframes(n)
        dtype = {2: "<i2", 4: "<i4"}.get(width)
        if dtype is None:
            raise ValueError(f"{width * 8}-bit PCM is not supported (16 or 32)")
        samples = np.frombuffer(data, dtype=dtype).astype(np.float32) / float(2 ** (8 * width - 1))
    except wave.Error:  # IEEE float wav (format 3), which the wave module does not read
        rate, channels, samples = _read_float_wav(path)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: {rate} Hz; this script reads {SAMPLE_RATE} Hz only (resample it first, "
                         "e.g. sox in.wav -r 16000 out.wav)")
    return samples.reshape(-1, channels)[:, 0].copy()


def _read_float_wav(path: Path) -> Tuple[int, int, np.ndarray]:
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF wav file")
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            samples = body
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None or fmt[0] != 3 or fmt[5] != 32:
        raise ValueError(f"{path}: neither PCM nor 32-bit float wav")
    return fmt[2], fmt[1], np.frombuffer(samples, dtype="<f4").astype(np.float32)


def compute_fbank(samples: np.ndarray) -> np.ndarray:
    """(num_samples,) 16 kHz in [-1, 1] -> (T, 80) log-mel fbank at 100 Hz, with lhotse's
    FbankConfig (25 ms povey window, no dither, no snip_edges, 20 Hz to Nyquist - 400 Hz)."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = False
    opts.mel_opts.num_bins = 80
    opts.mel_opts.high_freq = -400.0
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(SAMPLE_RATE, samples.tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]).astype(np.float32)


def read_tokens(path: Path) -> Dict[int, str]:
    """tokens.txt (``symbol id`` per line) -> {id: symbol}."""
    table = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        sym, idx = line.rsplit(" ", 1)
        table[int(idx)] = sym
    return table


def tokens_to_text(ids: Sequence[int], table: Dict[int, str]) -> str:
    """Word pieces (``▁`` starts a word) or letters (``|`` between words) -> words."""
    text = "".join(table[i] for i in ids if i >= SPECIALS)
    return " ".join(text.replace("\u2581", " ").replace(WORD_SEP, " ").split())


class OnnxModel:
    """The ONNX files in ``model_dir``; ``transcribe`` runs one utterance at a time."""

    def __init__(self, model_dir: Path, num_threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = num_threads
        self.sessions = {}
        for name in ("encoder", "decoder", "joiner", "model"):
            path = Path(model_dir) / f"{name}.onnx"
            if path.is_file():
                self.sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        if "encoder" not in self.sessions and "model" not in self.sessions:
            raise FileNotFoundError(f"{model_dir} has neither encoder.onnx nor model.onnx (run export.py)")
        meta = next(iter(self.sessions.values())).get_modelmeta().custom_metadata_map
        self.blank_id = int(meta["blank_id"])
        self.context_size = int(meta.get("context_size", 0))
        self.waveform = meta["feature_type"] == "waveform"

    def features(self, samples: np.ndarray) -> np.ndarray:
        """What the encoder reads for one utterance: (1, T, 80) fbank or (1, num_samples)."""
        return (samples if self.waveform else compute_fbank(samples))[None]

    def _run(self, name: str, outputs: List[str], **feeds: np.ndarray) -> List[np.ndarray]:
        return self.sessions[name].run(outputs, feeds)

    def ctc_greedy_search(self, x: np.ndarray) -> List[int]:
        log_probs, lens = self._run("model", ["log_probs", "log_probs_len"], x=x,
                                    x_lens=np.array([x.shape[1]], dtype=np.int64))
        best = log_probs[0, : int(lens[0])].argmax(-1).tolist()
        return [t for i, t in enumerate(best) if t != self.blank_id and (i == 0 or t != best[i - 1])]

    def greedy_search(self, x: np.ndarray) -> List[int]:
        """Transducer: the best symbol or blank on each frame (one symbol per frame at most)."""
        enc, lens = self._run("encoder", ["encoder_out", "encoder_out_lens"], x=x,
                              x_lens=np.array([x.shape[1]], dtype=np.int64))
        context = [-1] * (self.context_size - 1) + [self.blank_id]  # -1 embeds to zero

        def decoder_out() -> np.ndarray:
            return self._run("decoder", ["decoder_out"], y=np.array([context], dtype=np.int64))[0]

        dec, hyp = decoder_out(), []
        for t in range(int(lens[0])):
            logit = self._run("joiner", ["logit"], encoder_out=enc[0, t:t + 1], decoder_out=dec)[0]
            best = int(logit[0].argmax())
            if best != self.blank_id:
                hyp.append(best)
                context = context[1:] + [best]
                dec = decoder_out()
        return hyp

    def transcribe(self, samples: np.ndarray, method: str) -> List[int]:
        if method == "greedy_search" and "encoder" not in self.sessions:
            raise ValueError("greedy_search needs encoder/decoder/joiner.onnx; use ctc-greedy-search")
        if method == "ctc-greedy-search" and "model" not in self.sessions:
            raise ValueError("ctc-greedy-search needs model.onnx; use greedy_search")
        x = self.features(samples)
        return self.greedy_search(x) if method == "greedy_search" else self.ctc_greedy_search(x)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="export.py's onnx/ directory")
    parser.add_argument("--tokens", type=Path, default=None, help="tokens.txt; default <model-dir>/tokens.txt")
    parser.add_argument("--decoding-method", choices=["greedy_search", "ctc-greedy-search"], default=None,
                        help="default: greedy_search when encoder.onnx is there, else ctc-greedy-search")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("sound_files", nargs="+", type=Path, help="16 kHz wav files")
    return parser


def main(argv: Sequence[str] = None) -> Dict[str, str]:
    args = get_parser().parse_args(argv)
    model = OnnxModel(args.model_dir, args.num_threads)
    method = args.decoding_method or ("greedy_search" if "encoder" in model.sessions else "ctc-greedy-search")
    table = read_tokens(args.tokens or args.model_dir / "tokens.txt")
    out = {}
    for path in args.sound_files:
        out[str(path)] = tokens_to_text(model.transcribe(read_wav(path), method), table)
        print(f"{path}: {out[str(path)]}")
    sys.stdout.flush()
    return out


if __name__ == "__main__":
    main()
