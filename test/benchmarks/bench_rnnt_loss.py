#!/usr/bin/env python3
"""Benchmark of icefall.asr.rnnt_loss (run on demand, not by pytest).

1. Memory and time of one training step of the loss (forward + backward):
   the simple + pruned loss (prune range 5) vs the full RNN-T loss on
   (B, T, S+1, V) logits.  Both use the additive joiner ``am + lm`` so that
   only the loss machinery differs.  Each variant runs in its own
   subprocess; memory is the peak resident set size (ru_maxrss) minus the
   resident size just before the step.
2. The anti-diagonal recursion (mutual_information_recursion, forward and
   occupation backward) vs a compiled scalar loop of k2's CPU algorithm
   (written below in C, built with gcc -O3 and called through ctypes).

Usage:
  python test/benchmarks/bench_rnnt_loss.py            # B=16 T=500 S=100 V=500
  python test/benchmarks/bench_rnnt_loss.py --batch 4 --frames 100 --symbols 20 --vocab 100
  python test/benchmarks/bench_rnnt_loss.py --only losses --device cuda   # wall ms, peak allocated
"""
import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from icefall.asr import rnnt_loss as R  # noqa: E402

# k2's CPU algorithm (mutual_information_cpu.cu), re-written as plain C: the
# forward fills p[s][t] row by row with a scalar log-add; the backward walks
# the cells in reverse, splitting each cell's gradient between its two arcs.
C_SOURCE = r"""
#include <math.h>
static inline float log_add(float x, float y) {
  float d;
  if (x < y) { d = x - y; x = y; } else { d = y - x; }
  if (d >= -15.9423847f) return x + log1pf(expf(d));  /* log(FLT_EPSILON) */
  return x;
}
/* px (B,S,T1), py (B,S+1,T), p (B,S+1,T+1); T1 == T+1 regular, T1 == T modified */
void mi_forward(const float* px, const float* py, float* p, float* ans,
                int B, int S, int T, int T1) {
  const int off = (T1 == T) ? -1 : 0, W = T + 1;
  for (int b = 0; b < B; b++) {
    const float* X = px + (long)b * S * T1;
    const float* Y = py + (long)b * (S + 1) * T;
    float* P = p + (long)b * (S + 1) * W;
    P[0] = 0.f;
    for (int s = 1; s <= S; s++) P[s * W] = off ? -INFINITY : P[(s - 1) * W] + X[(s - 1) * T1];
    for (int t = 1; t <= T; t++) P[t] = P[t - 1] + Y[t - 1];
    for (int s = 1; s <= S; s++) {
      float prev = P[s * W];
      for (int t = 1; t <= T; t++) {
        prev = log_add(P[(s - 1) * W + t + off] + X[(s - 1) * T1 + t + off], prev + Y[s * T + t - 1]);
        P[s * W + t] = prev;
      }
    }
    ans[b] = P[S * W + T];
  }
}
void mi_backward(const float* px, const float* py, const float* p, float* pg,
                 float* pxg, float* pyg, int B, int S, int T, int T1) {
  const int off = (T1 == T) ? -1 : 0, W = T + 1;
  for (int b = 0; b < B; b++) {
    const float* X = px + (long)b * S * T1;
    const float* P = p + (long)b * (S + 1) * W;
    float* G = pg + (long)b * (S + 1) * W;
    float* XG = pxg + (long)b * S * T1;
    float* YG = pyg + (long)b * (S + 1) * T;
    for (int i = 0; i < (S + 1) * W; i++) G[i] = 0.f;
    G[S * W + T] = 1.f;
    for (int s = S; s > 0; s--) {
      for (int t = T; t > 0; t--) {
        float term1 = P[(s - 1) * W + t + off] + X[(s - 1) * T1 + t + off];
        float total = P[s * W + t];
        if (total - total != 0) total = 0;
        float d1 = expf(term1 - total), g = G[s * W + t], g1, g2;
        if (d1 - d1 == 0) { g1 = d1 * g; g2 = g - g1; } else { g1 = g2 = 0.f; }
        XG[(s - 1) * T1 + t + off] = g1;
        G[(s - 1) * W + t + off] = g1;
        YG[s * T + t - 1] = g2;
        G[s * W + t - 1] += g2;
      }
    }
    for (int t = T; t > 0; t--) { G[t - 1] += G[t]; YG[t - 1] = G[t]; }
    /* column t = 0 (regular only; modified has no arcs there) */
    if (!off) for (int s = S; s > 0; s--) { G[(s - 1) * W] += G[s * W]; XG[(s - 1) * T1] = G[s * W]; }
  }
}
"""


def build_c_library():
    d = tempfile.mkdtemp(prefix="bench_rnnt_")
    src, lib = os.path.join(d, "mi.c"), os.path.join(d, "mi.so")
    with open(src, "w") as f:
        f.write(C_SOURCE)
    subprocess.run(["gcc", "-O3", "-march=native", "-shared", "-fPIC", src, "-o", lib, "-lm"], check=True)
    return ctypes.CDLL(lib)


def c_recursion(lib, px, py, with_grad):
    B, S, T1 = px.shape
    T = py.shape[2]
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)
    p = np.empty((B, S + 1, T + 1), np.float32)
    ans = np.empty(B, np.float32)
    lib.mi_forward(ptr(px), ptr(py), ptr(p), ptr(ans), B, S, T, T1)
    if not with_grad:
        return ans, None, None
    pg = np.empty_like(p)
    pxg, pyg = np.empty_like(px), np.empty_like(py)
    lib.mi_backward(ptr(px), ptr(py), ptr(p), ptr(pg), ptr(pxg), ptr(pyg), B, S, T, T1)
    return ans, pxg, pyg


def median_cpu_ms(fns, repeats):
    """Median CPU time (process_time, robust to other load on the machine) of
    each function, the functions run alternately so they share conditions."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.process_time()
            fn()
            ts.append(time.process_time() - t0)
    return [1e3 * statistics.median(ts) for ts in times]


def bench_recursion(args, lib):
    rows = []
    B, S, T = args.batch, args.symbols, args.frames
    g = torch.Generator().manual_seed(0)
    for name, T1 in [("regular", T + 1), ("modified", T)]:
        px = torch.randn(B, S, T1, generator=g)
        py = torch.randn(B, S + 1, T, generator=g)
        pxn, pyn = px.numpy(), py.numpy()
        # same numbers first
        ours, (gx, gy) = R.mutual_information_recursion(px, py, return_grad=True)
        ref, rgx, rgy = c_recursion(lib, pxn, pyn, True)
        assert np.allclose(ours.numpy(), ref, rtol=1e-4, atol=1e-2), (ours, ref)
        assert np.allclose(gx.numpy(), rgx, atol=1e-3) and np.allclose(gy.numpy(), rgy, atol=1e-3)
        for what, with_grad in [("forward", False), ("forward+backward", True)]:
            ours_ms, c_ms = median_cpu_ms(
                [lambda: R.mutual_information_recursion(px, py, return_grad=with_grad),
                 lambda: c_recursion(lib, pxn, pyn, with_grad)], args.repeats)
            rows.append((f"recursion {name} {what}", ours_ms, c_ms))
    return rows


def loss_step(kind, B, T, S, V, prune_range=5, device="cpu"):
    """Forward+backward of the loss; returns (seconds, peak memory growth MiB): on CPU one cold
    step's process time and peak RSS, on CUDA the median wall clock of 3 steps after a warm-up
    and their peak allocated memory."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    am = torch.randn(B, T, V, generator=g).to(device).requires_grad_()
    lm = torch.randn(B, S + 1, V, generator=g).to(device).requires_grad_()
    symbols = torch.randint(1, V, (B, S), generator=g).to(device)
    boundary = torch.zeros(B, 4, dtype=torch.int64)
    boundary[:, 2] = torch.randint(S // 2, S + 1, (B,), generator=g)
    boundary[:, 3] = torch.randint(T // 2, T + 1, (B,), generator=g)
    boundary[0, 2:] = torch.tensor([S, T])
    boundary = boundary.to(device)
    cuda = torch.device(device).type == "cuda"

    def step() -> None:
        if kind == "full":
            logits = am.unsqueeze(2) + lm.unsqueeze(1)  # (B, T, S+1, V)
            loss = R.rnnt_loss(logits, symbols, 0, boundary, reduction="sum")
        else:
            simple, (px_grad, py_grad) = R.rnnt_loss_smoothed(
                lm, am, symbols, 0, lm_only_scale=0.25, am_only_scale=0.0,
                boundary=boundary, reduction="sum", return_grad=True)
            ranges = R.get_rnnt_prune_ranges(px_grad, py_grad, boundary, prune_range)
            am_p, lm_p = R.do_rnnt_pruning(am, lm, ranges)
            pruned = R.rnnt_loss_pruned(am_p + lm_p, symbols, ranges, 0, boundary, reduction="sum")
            loss = 0.5 * simple + pruned
        loss.backward()

    if cuda:
        # A warm-up step first: the first CUDA calls of a process load kernels and create the
        # cuBLAS handle, which would otherwise be most of what is timed. Then the median of 3.
        step()
        am.grad = lm.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        mem_before = torch.cuda.memory_allocated()
        times = []
        for _ in range(3):
            am.grad = lm.grad = None
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return sorted(times)[1], (torch.cuda.max_memory_allocated() - mem_before) / 2**20
    # one cold step in a fresh process: peak RSS is then this step's
    with open("/proc/self/statm") as f:
        rss_before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    t0 = time.process_time()
    step()
    seconds = time.process_time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return seconds, (peak - rss_before) / 2**20


def bench_losses(args):
    rows = {}
    for kind in ["simple+pruned", "full"]:
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", kind,
               "--batch", str(args.batch), "--frames", str(args.frames),
               "--symbols", str(args.symbols), "--vocab", str(args.vocab), "--device", args.device]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[kind] = json.loads(out.strip().splitlines()[-1])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", choices=["all", "losses", "recursion"], default="all")
    parser.add_argument("--device", default="cpu", help="loss steps only (the recursion comparison is CPU)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        seconds, mib = loss_step(args._child, args.batch, args.frames, args.symbols, args.vocab, device=args.device)
        print(json.dumps({"seconds": seconds, "peak_mib": mib}))
        return

    torch.set_num_threads(1)
    print(f"B={args.batch} T={args.frames} S={args.symbols} V={args.vocab}, {args.device}, 1 thread, torch {torch.__version__}")
    if args.only in ("all", "losses"):
        losses = bench_losses(args)
        sp, full = losses["simple+pruned"], losses["full"]
        print("\nloss step (forward+backward), subprocess each")
        print("| variant | ms | peak MiB |\n|---|---|---|")
        for kind, r in losses.items():
            print(f"| {kind} | {1e3 * r['seconds']:.1f} | {r['peak_mib']:.1f} |")
        print(f"ratio simple+pruned / full: time {sp['seconds'] / full['seconds']:.3f}, "
              f"memory {sp['peak_mib'] / full['peak_mib']:.3f} (target <= 0.1)")
    if args.only == "losses":
        return
    if shutil.which("gcc") is None:
        print("\nno gcc: skipping the comparison with the compiled scalar loop")
        return
    lib = build_c_library()
    rows = bench_recursion(args, lib)
    print("\nrecursion: ours (anti-diagonal, torch) vs compiled scalar loop (k2's CPU algorithm in C)")
    print(f"{'case (median CPU time)':<36}{'ours ms':>10}{'C ms':>10}{'ours/C':>8}")
    for name, ours_ms, c_ms in rows:
        print(f"{name:<36}{ours_ms:>10.1f}{c_ms:>10.1f}{ours_ms / c_ms:>8.2f}")
    print("target: ours/C <= 1.5")


if __name__ == "__main__":
    main()
