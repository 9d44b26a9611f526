#!/usr/bin/env python3
"""torch.compile vs eager: training step time (forward + backward + optimizer step).

For each encoder configuration (front end + encoder, training mode, loss = mean square of the
output, Adam step), the same batch every step so that nothing recompiles after the first
steps; the Zipformer's schedules sit at their final values (batch count 100000), as in
bench_encoders.py. Eager and compiled copies start from the same weights and are timed
alternately (median of ``--steps``); compile time is the first compiled step minus an eager one.

Usage:
  python test/benchmarks/bench_compile.py [--encoders zipformer-tiny hubert-tiny] [--batch 4]
      [--seconds 2] [--steps 10] [--threads 1] [--device cpu] [--dtype fp32|fp16|bf16]
      [--frontend cnn|fbank] [--backend inductor] [--mode reduce-overhead]
  python test/benchmarks/bench_compile.py --dry-run
"""
import argparse
import copy
import statistics
import time
from typing import Dict, List, Optional

import torch

from icefall.nn.configs import build_encoder
from icefall.nn.scaling import set_batch_count

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_step(model: torch.nn.Module, x: torch.Tensor, lens: torch.Tensor, device: torch.device,
              dtype: Optional[torch.dtype]):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(x, lens)[0].float().pow(2).mean()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def bench(name: str, args) -> Dict:
    from torch._dynamo.utils import counters

    device = torch.device(args.device)
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager = build_encoder(name, frontend=args.frontend).train().to(device)
    set_batch_count(eager, 100000)
    compiled = copy.deepcopy(eager)
    compiled.compile(backend=args.backend, mode=args.mode)
    n = int(args.seconds * (16000 if args.frontend == "cnn" else 100))
    shape = (args.batch, n) if args.frontend == "cnn" else (args.batch, n, 80)
    x = torch.randn(*shape, device=device)
    lens = torch.full((args.batch,), n, dtype=torch.long, device=device)
    lens[0] = n * 3 // 4  # some padding, as in real batches
    steps = {"eager": make_step(eager, x, lens, device, DTYPES[args.dtype]),
             "compiled": make_step(compiled, x, lens, device, DTYPES[args.dtype])}
    first = {}
    for label, step in steps.items():
        t0 = time.perf_counter()
        step()
        first[label] = time.perf_counter() - t0
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in range(args.steps):
        for label, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - t0)
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    breaks = counters["graph_break"]
    return dict(encoder=name, eager=e, compiled=c, ratio=c / e, compile_s=first["compiled"] - first["eager"],
                audio_per_s=args.batch * args.seconds / min(e, c), peak_mib=peak,
                graphs=counters["stats"]["unique_graphs"], breaks=sum(breaks.values()),
                break_reasons=[f"{n} x {reason.splitlines()[0][:160]}" for reason, n in breaks.most_common(3)])


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["zipformer-tiny", "hubert-tiny"])
    parser.add_argument("--frontend", default="cnn", choices=["cnn", "fbank"],
                        help="cnn: the wav2vec2 CNN; fbank: Conv2d subsampling (its Balancer/Whiten break graphs)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (the dry run uses eager)")
    parser.add_argument("--mode", default=None,
                        help="torch.compile mode, e.g. reduce-overhead (CUDA graphs: fewer host launches per step)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="autocast dtype (fp16: CUDA)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, to check that it runs")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.encoders, args.batch, args.seconds, args.steps, args.backend = ["hubert-tiny"], 2, 0.5, 2, "eager"
    torch.set_num_threads(args.threads)
    print(f"\n{args.device}, {args.threads} thread(s), {args.dtype}, {args.backend}{'' if args.mode is None else ' ' + args.mode}, {args.frontend} front end, batch {args.batch} x "
          f"{args.seconds:g} s, median of {args.steps} interleaved training steps")
    print("| encoder | eager ms/step | compiled ms/step | compiled / eager | compile s | audio s / s (faster) "
          "| peak MiB (CUDA, both models) | graphs compiled | graph breaks |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for name in args.encoders:  # each row as soon as it is measured: a time limit keeps the others
        r = bench(name, args)
        rows.append(r)
        print(f"| {r['encoder']} | {1000 * r['eager']:.1f} | {1000 * r['compiled']:.1f} | "
              f"**{r['ratio']:.2f}** | {r['compile_s']:.1f} | {r['audio_per_s']:.1f} | {r['peak_mib']:.0f} | "
              f"{r['graphs']} | {r['breaks']} |", flush=True)
    for r in rows:  # one graph, no breaks is what test_compile.py asserts on CPU; say where else
        for line in r["break_reasons"]:
            print(f"graph break in {r['encoder']}: {line}")
    return rows


if __name__ == "__main__":
    main()
