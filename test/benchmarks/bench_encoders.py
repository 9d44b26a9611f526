#!/usr/bin/env python3
"""Encoder speed on CPU: forward + backward seconds per second of audio, same batch for all.

Compares (all with the wav2vec2 CNN front end over 16 kHz waveform, training mode):
  * zipformer-ssl-base vs our hubert-base  (target: Zipformer >= 2x faster)
  * our hubert-base vs Hugging Face transformers HubertModel of the same size, randomly
    initialised from a HubertConfig (no download)  (target: ours no slower)

Layer drop is disabled in both HuBERTs (it would skip work at random); the Zipformer's
schedules are set to batch 100000 (their final values).

Usage:
  python test/benchmarks/bench_encoders.py [--batch 4] [--seconds 10] [--reps 2] [--threads 1]
"""
import argparse
import time
from typing import Callable, Dict, List, Tuple

import torch

from icefall.nn.configs import build_encoder, count_parameters
from icefall.nn.scaling import set_batch_count


def time_fwd_bwd(step: Callable[[], torch.Tensor], reps: int) -> float:
    """Median seconds of ``step().backward()`` over ``reps`` runs after one warm-up run."""
    step().backward()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step().backward()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def ours(name: str, wav: torch.Tensor, lens: torch.Tensor, **overrides) -> Tuple[Callable, int]:
    torch.manual_seed(0)
    model = build_encoder(name, **overrides).train()
    set_batch_count(model, 100000)

    def step() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        out, _ = model(wav, lens)
        return out.pow(2).mean()

    return step, count_parameters(model)


def hugging_face(wav: torch.Tensor) -> Tuple[Callable, int]:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    # HubertConfig() defaults are HuBERT Base (12 x 768, group-norm CNN, post-norm).
    model = HubertModel(HubertConfig(layerdrop=0.0, mask_time_prob=0.0)).train()

    def step() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        return model(wav).last_hidden_state.pow(2).mean()

    return step, count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    n = int(args.seconds * 16000)
    torch.manual_seed(0)
    wav = torch.randn(args.batch, n)
    lens = torch.full((args.batch,), n, dtype=torch.long)
    audio_seconds = args.batch * args.seconds

    rows: Dict[str, Tuple[int, float]] = {}
    candidates: List[Tuple[str, Callable[[], Tuple[Callable, int]]]] = [
        ("zipformer-ssl-base", lambda: ours("zipformer-ssl-base", wav, lens)),
        ("hubert-base (ours)", lambda: ours("hubert-base", wav, lens, layerdrop=0.0)),
        ("hubert-base (HF transformers)", lambda: hugging_face(wav)),
    ]
    for label, make in candidates:
        try:
            step, params = make()
        except ImportError as e:
            print(f"skipping {label}: {e}")
            continue
        sec = time_fwd_bwd(step, args.reps)
        rows[label] = (params, sec / audio_seconds)
        del step

    print(f"\nCPU, {args.threads} thread(s), batch {args.batch} x {args.seconds:g} s, forward+backward, "
          f"median of {args.reps} runs")
    print(f"| model | params (M) | s per audio s | x real time |")
    print(f"|---|---|---|---|")
    for label, (params, rtf) in rows.items():
        print(f"| {label} | {params / 1e6:.1f} | {rtf:.4f} | {1 / rtf:.1f} |")

    print()
    z, h, hf = "zipformer-ssl-base", "hubert-base (ours)", "hubert-base (HF transformers)"
    if z in rows and h in rows:
        print(f"speed-up of zipformer-ssl-base over hubert-base (ours): {rows[h][1] / rows[z][1]:.2f}x (target >= 2)")
    if h in rows and hf in rows:
        print(f"time of ours / HF for hubert-base: {rows[h][1] / rows[hf][1]:.2f} (target <= 1)")


if __name__ == "__main__":
    main()
