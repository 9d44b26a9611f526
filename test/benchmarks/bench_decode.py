#!/usr/bin/env python3
"""Decoding speed (real-time factor) of one exported model: our PyTorch decoding, our ONNX
decoding (icefall/asr/onnx_pretrained.py) and sherpa-onnx's offline recognizer, on the same wav
files, one utterance at a time, one thread, features included. Ratios are against sherpa-onnx.

    # from egs/mini/SSL after run.sh (the demo's CTC model; a transducer's onnx dir works too)
    python ../../../test/benchmarks/bench_decode.py --exp-dir zipformer/exp-ft \\
        --wavs download/mini/test --max-files 100

RTF = processing seconds / audio seconds (lower is faster). The hypotheses of the three paths are
compared too (they should agree word for word: the same exported weights).
"""
import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import soundfile as sf
import torch


def wav_copies(src: Path, out: Path, max_files: int) -> List[Path]:
    """16 kHz 16-bit wav copies of the sound files under ``src`` (onnx_pretrained reads wav)."""
    files = sorted(p for p in src.rglob("*") if p.suffix in (".wav", ".flac"))[:max_files]
    if not files:
        raise SystemExit(f"no .wav or .flac files under {src}")
    paths = []
    for f in files:
        samples, rate = sf.read(str(f), dtype="int16")
        if rate != 16000:
            raise SystemExit(f"{f}: {rate} Hz; this benchmark expects 16 kHz")
        paths.append(out / (f.stem + ".wav"))
        sf.write(str(paths[-1]), samples, rate, subtype="PCM_16")
    return paths


def timed(decode: Callable[[Path], str], files: List[Path]) -> Dict:
    decode(files[0])  # warm-up (lazy initialisation, first-call allocations)
    hyps, start = [], time.perf_counter()
    for f in files:
        hyps.append(" ".join(decode(f).replace("|", " ").split()))
    return {"seconds": time.perf_counter() - start, "hyps": hyps}


def pytorch_decoder(pretrained: Path, lang_dir: Path, method: str, beam: int) -> Callable[[Path], str]:
    from icefall.asr.decode import decode_batch
    from icefall.asr.onnx_pretrained import read_wav
    from icefall.data.features import make_fbank_extractor
    from icefall.data.tokenizer import load_tokenizer
    from icefall.models import load_model

    model, _ = load_model(pretrained, expect="asr", purpose="bench_decode.py")
    model.eval()
    tokenizer, extractor = load_tokenizer(lang_dir), make_fbank_extractor()

    def decode(path: Path) -> str:
        x = torch.from_numpy(extractor.extract(read_wav(path), 16000)).float()[None]
        with torch.no_grad():
            hyp = decode_batch(model, x, torch.tensor([x.shape[1]]), method, beam)[0]
        return tokenizer.decode(hyp)

    return decode


def onnx_decoder(onnx_dir: Path, method: str) -> Callable[[Path], str]:
    from icefall.asr.onnx_pretrained import OnnxModel, read_tokens, read_wav, tokens_to_text

    model, table = OnnxModel(onnx_dir, num_threads=1), read_tokens(onnx_dir / "tokens.txt")
    return lambda path: tokens_to_text(model.transcribe(read_wav(path), method), table)


def sherpa_decoder(onnx_dir: Path, method: str, beam: int) -> Callable[[Path], str]:
    import sherpa_onnx

    if (onnx_dir / "encoder.onnx").is_file():
        rec = sherpa_onnx.OfflineRecognizer.from_transducer(
            str(onnx_dir / "encoder.onnx"), str(onnx_dir / "decoder.onnx"), str(onnx_dir / "joiner.onnx"),
            str(onnx_dir / "tokens.txt"), num_threads=1, decoding_method=method, max_active_paths=beam)
    else:
        rec = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(str(onnx_dir / "model.onnx"),
                                                               str(onnx_dir / "tokens.txt"), num_threads=1)

    def decode(path: Path) -> str:
        samples, rate = sf.read(str(path), dtype="float32")
        stream = rec.create_stream()
        stream.accept_waveform(rate, samples)
        rec.decode_stream(stream)
        return stream.result.text

    return decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp-dir", type=Path, required=True, help="holds pretrained.pt and onnx/ (export.py)")
    ap.add_argument("--lang-dir", type=Path, default=None, help="default: the one pretrained.pt names")
    ap.add_argument("--wavs", type=Path, required=True, help="a directory of 16 kHz wav/flac files")
    ap.add_argument("--max-files", type=int, default=100)
    ap.add_argument("--beam-size", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    onnx_dir = args.exp_dir / "onnx"
    transducer = (onnx_dir / "encoder.onnx").is_file()
    lang_dir = args.lang_dir
    if lang_dir is None:
        from icefall.checkpoint import load_file

        lang_dir = Path(load_file(args.exp_dir / "pretrained.pt")["params"]["lang_dir"])
    with tempfile.TemporaryDirectory() as tmp:
        files = wav_copies(args.wavs, Path(tmp), args.max_files)
        audio = sum(sf.info(str(f)).duration for f in files)
        greedy = "greedy_search" if transducer else "ctc-greedy-search"
        rows = [("greedy", "sherpa-onnx", timed(sherpa_decoder(onnx_dir, "greedy_search", 4), files)),
                ("greedy", "ours, ONNX", timed(onnx_decoder(onnx_dir, greedy), files)),
                ("greedy", "ours, PyTorch", timed(pytorch_decoder(args.exp_dir / "pretrained.pt", lang_dir,
                                                                  greedy, 1), files))]
        if transducer:
            beam = args.beam_size
            rows += [(f"modified beam {beam}", "sherpa-onnx",
                      timed(sherpa_decoder(onnx_dir, "modified_beam_search", beam), files)),
                     (f"modified beam {beam}", "ours, PyTorch",
                      timed(pytorch_decoder(args.exp_dir / "pretrained.pt", lang_dir, "modified_beam_search",
                                            beam), files))]
    print(f"\n{len(files)} utterances, {audio:.1f} s of audio, {'transducer' if transducer else 'CTC'}, "
          "one thread, one utterance at a time\n")
    print("| search | decoder | RTF | / sherpa-onnx | hypotheses equal to sherpa-onnx's |")
    print("|---|---|---|---|---|")
    reference = {}
    for search, name, r in rows:
        rtf = r["seconds"] / audio
        ref = reference.setdefault(search, (rtf, r["hyps"]))
        same = sum(a == b for a, b in zip(r["hyps"], ref[1]))
        print(f"| {search} | {name} | {rtf:.4f} | **{rtf / ref[0]:.2f}** | {same}/{len(files)} |")


if __name__ == "__main__":
    main()
