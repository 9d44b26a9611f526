#!/usr/bin/env python3
"""Encoder speed: forward + backward seconds per second of audio, same batch for all.

Compares (all with the wav2vec2 CNN front end over 16 kHz waveform, training mode):
  * zipformer-ssl-base vs our hubert-base  (target: Zipformer >= 2x faster)
  * our hubert-base vs Hugging Face transformers HubertModel of the same size, randomly
    initialised from a HubertConfig (no download)  (target: ours no slower)

Each model's full step is also profiled once: aten operator calls per step (and CUDA kernels on
a GPU). They hardly depend on the batch, so where a GPU finishes the kernels faster than the
host issues them (small batches), time per step follows this count, not the FLOPs.

Layer drop is disabled in both HuBERTs (it would skip work at random); the Zipformer's
schedules are set to batch 100000 (their final values).  Memory settings as in our CPU training
(``icefall.env.setup_cpu_memory``): malloc keeps freed memory (``--default-malloc`` measures
without it) and oneDNN's primitive cache is off.

Usage:
  python test/benchmarks/bench_encoders.py [--batch 4] [--seconds 10] [--reps 2] [--threads 1]
      [--default-malloc] [--device cpu] [--dtype fp32|fp16|bf16] [--tiny]
"""
import argparse
import time
from typing import Callable, Dict, List, Tuple

import torch

from icefall.env import drop_onednn_primitive_cache, keep_freed_memory
from icefall.nn.configs import build_encoder, count_parameters
from icefall.nn.scaling import set_batch_count


def ours(name: str, wav: torch.Tensor, lens: torch.Tensor, **overrides) -> Tuple[Callable, Callable, int]:
    """(full step, encoder-only step, parameter count); each step returns a scalar loss."""
    torch.manual_seed(0)
    model = build_encoder(name, **overrides).train().to(wav.device)
    set_batch_count(model, 100000)
    with torch.no_grad():
        feats, feat_lens = model.frontend(wav, lens)

    def full() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        return model(wav, lens)[0].pow(2).mean()

    def encoder_only() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        return model.encoder(feats.requires_grad_(True), feat_lens)[0].pow(2).mean()

    return full, encoder_only, count_parameters(model)


def hugging_face(wav: torch.Tensor) -> Tuple[Callable, Callable, int]:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    # HubertConfig() defaults are HuBERT Base (12 x 768, group-norm CNN, post-norm).
    model = HubertModel(HubertConfig(layerdrop=0.0, mask_time_prob=0.0)).train().to(wav.device)
    with torch.no_grad():
        proj = model.feature_projection(model.feature_extractor(wav).transpose(1, 2))
        feats = proj[0] if isinstance(proj, tuple) else proj

    def full() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        return model(wav).last_hidden_state.pow(2).mean()

    def encoder_only() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        return model.encoder(feats.requires_grad_(True)).last_hidden_state.pow(2).mean()

    return full, encoder_only, count_parameters(model)


def count_ops(step: Callable, device: torch.device) -> Tuple[int, int]:
    """(aten operator calls, CUDA kernels; 0 on CPU) in one forward + backward of ``step``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    aten = sum(e.name.startswith("aten::") for e in events)
    kernels = sum(e.device_type == torch.autograd.DeviceType.CUDA for e in events)
    return aten, kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="autocast dtype")
    parser.add_argument("--tiny", action="store_true", help="zipformer-tiny vs hubert-tiny, no HF (dry runs)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc malloc as it is (it unmaps large freed blocks)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept = not args.default_malloc and keep_freed_memory()
    drop_onednn_primitive_cache()  # as in CPU training (docs/training.md)

    n = int(args.seconds * 16000)
    torch.manual_seed(0)
    device = torch.device(args.device)
    wav = torch.randn(args.batch, n).to(device)
    lens = torch.full((args.batch,), n, dtype=torch.long, device=device)
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    audio_seconds = args.batch * args.seconds

    z, h, hf = "zipformer-ssl-base", "hubert-base (ours)", "hubert-base (HF transformers)"
    if args.tiny:
        z, h = "zipformer-tiny", "hubert-tiny (ours)"
    makers = {
        z: lambda: ours(z, wav, lens),
        h: lambda: ours(h.split()[0], wav, lens, layerdrop=0.0),
    }
    if not args.tiny:
        makers[hf] = lambda: hugging_face(wav)
    models = {}
    for label, make in makers.items():
        try:
            models[label] = make()
        except ImportError as e:
            print(f"skipping {label}: {e}")

    # Round-robin over models so that load changes on a shared machine hit all of them alike;
    # one warm-up run each, then the median of --reps runs.
    times: Dict[Tuple[str, str], List[float]] = {}
    for rep in range(args.reps + 1):
        for label, (full, enc, _) in models.items():
            for kind, step in (("full", full), ("encoder", enc)):
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = step()
                loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if rep > 0:
                    times.setdefault((label, kind), []).append(time.perf_counter() - t0)

    ops = {}
    for label, (full, _, _) in models.items():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            ops[label] = count_ops(full, device)

    def per_audio_second(label: str, kind: str) -> float:
        ts = sorted(times[(label, kind)])
        return ts[len(ts) // 2] / audio_seconds

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"\n{where}, {args.dtype}, batch {args.batch} x {args.seconds:g} s, training-mode "
          f"forward+backward, median of {args.reps} interleaved runs, malloc "
          f"{'keeps freed memory' if kept else 'default'}; seconds per audio second")
    print("| model | params (M) | front end + encoder | encoder only | aten calls / step | CUDA kernels / step |")
    print("|---|---|---|---|---|---|")
    for label, (_, _, params) in models.items():
        aten, kernels = ops[label]
        print(f"| {label} | {params / 1e6:.1f} | {per_audio_second(label, 'full'):.4f} | "
              f"{per_audio_second(label, 'encoder'):.4f} | {aten} | {kernels if device.type == 'cuda' else '-'} |")
    print()
    for kind in ("full", "encoder"):
        if z in models and h in models:
            r = per_audio_second(h, kind) / per_audio_second(z, kind)
            print(f"[{kind}] speed-up of {z} over {h}: {r:.2f}x (target >= 2)")
        if h in models and hf in models:
            r = per_audio_second(h, kind) / per_audio_second(hf, kind)
            print(f"[{kind}] time of ours / HF for hubert-base: {r:.2f} (target <= 1)")


if __name__ == "__main__":
    main()
