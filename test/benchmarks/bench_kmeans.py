#!/usr/bin/env python3
"""k-means labelling: ours vs what HuBERT users run, on the same data, fit + label.

* sklearn ``MiniBatchKMeans`` with the settings of fairseq's HuBERT recipe
  (``examples/hubert/simple_kmeans/learn_kmeans.py``: k-means++, batch 10000, max_iter 100,
  tol 0, max_no_improvement 100, n_init 20, reassignment_ratio 0), labels by ``predict``;
* faiss ``Kmeans`` with its defaults (25 Lloyd iterations on at most 256 points per centroid,
  random init), labels by a flat-index search;
* ours, ``icefall.ssl.kmeans.KMeans`` (mini-batch, k-means++ on 10000 rows, ``--epochs``).

Two synthetic sets with known "phone" labels (so PNMI can be reported):

* ``mfcc``: MFCC-like 39-d frames (13 static + deltas + delta-deltas of a piecewise-constant
  phone/state sequence plus noise), 100 clusters as in HuBERT iteration 1;
* ``layer``: stands for layer-6 features, ``--layer-dim`` (768) from a mixture of many states
  in a 32-d subspace plus isotropic noise, 500 clusters as in iteration 2.

Inertia is the mean squared distance of every frame to its nearest centroid, computed the same
way for all three. Times are wall clock with ``--threads`` threads for everyone, and the
process's CPU time (steadier than wall clock on a shared machine; data generation excluded).

Usage:
  python test/benchmarks/bench_kmeans.py [--sets mfcc layer] [--frames 200000]
      [--layer-frames 100000] [--epochs 3] [--sklearn-n-init 20] [--threads 1] [--device cpu]
  python test/benchmarks/bench_kmeans.py --dry-run      # tiny sizes: checks that it runs
"""
import argparse
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from icefall.eval.pnmi import unit_quality
from icefall.ssl.kmeans import KMeans, compute_deltas, nearest_centroids

NUM_PHONES = 40
SKLEARN_INIT_SIZE = 30000  # MiniBatchKMeans's default init_size: 3 x batch_size (10000)


def mfcc_like(frames: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(frames, 39) features and (frames,) phone ids: 3 states per phone, segments of 6-20
    frames, cepstrum-like decreasing scales, then deltas and delta-deltas along time."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(3.0, 0.5, 13)
    means = torch.randn(NUM_PHONES, 3, 13, generator=g) * scale
    n_seg = frames // 6 + 1
    phones = torch.randint(NUM_PHONES, (n_seg,), generator=g)
    durs = torch.randint(6, 21, (n_seg,), generator=g)
    phone = phones.repeat_interleave(durs)[:frames]
    start = torch.cumsum(durs, 0) - durs
    pos = torch.arange(len(phone)) - start.repeat_interleave(durs)[:frames]
    state = (3 * pos // durs.repeat_interleave(durs)[:frames]).clamp(max=2)
    static = means[phone, state] + 0.6 * scale * torch.randn(frames, 13, generator=g)
    d = compute_deltas(static)
    return torch.cat([static, d, compute_deltas(d)], 1), phone


def layer_like(frames: int, dim: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(frames, dim) features and (frames,) phone ids: 16 states per phone, each a Gaussian in a
    random 32-d subspace, plus isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    states = 16 * NUM_PHONES
    means = torch.randn(states, 32, generator=g) * 3
    proj = torch.randn(32, dim, generator=g) / 32**0.5
    state = torch.randint(states, (frames,), generator=g)
    x = (means[state] + torch.randn(frames, 32, generator=g)) @ proj
    return x.add_(torch.randn(frames, dim, generator=g), alpha=0.5), state // 16


def run_ours(x: torch.Tensor, k: int, epochs: int, device: str, fit_rows: Optional[int] = None,
             init_size: Optional[int] = None) -> Tuple[float, float, torch.Tensor, torch.Tensor]:
    """Fit on the first ``fit_rows`` rows (all by default; the sets are in random order), label all.
    ``init_size``: rows for k-means++ (ours defaults to 10000; sklearn's MiniBatchKMeans to 3 x batch)."""
    xd = x.to(device)
    sync = torch.cuda.synchronize if xd.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    km = KMeans(k).fit([xd[:fit_rows]], num_epochs=epochs, init_size=init_size,
                       generator=torch.Generator(device).manual_seed(0))
    sync()
    t1 = time.perf_counter()
    labels = km.predict(xd)
    sync()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, km.centroids.cpu(), labels.cpu()


def run_sklearn(x: torch.Tensor, k: int, n_init: int) -> Tuple[float, float, torch.Tensor, torch.Tensor]:
    from sklearn.cluster import MiniBatchKMeans

    xn = x.numpy()
    t0 = time.perf_counter()
    m = MiniBatchKMeans(k, init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
                        max_no_improvement=100, n_init=n_init, reassignment_ratio=0.0,
                        compute_labels=False, random_state=0).fit(xn)
    t1 = time.perf_counter()
    labels = m.predict(xn)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, torch.from_numpy(m.cluster_centers_).float(), torch.from_numpy(labels)


def run_faiss(x: torch.Tensor, k: int) -> Tuple[float, float, torch.Tensor, torch.Tensor]:
    import faiss

    xn = np.ascontiguousarray(x.numpy())
    t0 = time.perf_counter()
    m = faiss.Kmeans(x.shape[1], k, seed=0)
    m.train(xn)
    t1 = time.perf_counter()
    _, idx = m.index.search(xn, 1)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, torch.from_numpy(m.centroids), torch.from_numpy(idx[:, 0]).long()


def bench_set(name: str, x: torch.Tensor, phones: torch.Tensor, k: int, sklearn_n_init: int, args) -> List[Dict]:
    runners: Dict[str, Callable] = {
        f"ours ({args.epochs} epochs, {args.device})": lambda: run_ours(x, k, args.epochs, args.device),
        f"ours ({args.epochs} epochs, {args.device}), fit on 256 K rows as faiss":
            lambda: run_ours(x, k, args.epochs, args.device, 256 * k),
        f"ours ({args.epochs} epochs, {args.device}), k-means++ on {SKLEARN_INIT_SIZE} rows as sklearn":
            lambda: run_ours(x, k, args.epochs, args.device, init_size=SKLEARN_INIT_SIZE),
        f"sklearn MiniBatchKMeans (fairseq settings, n_init {sklearn_n_init})":
            lambda: run_sklearn(x, k, sklearn_n_init),
        "faiss Kmeans (defaults)": lambda: run_faiss(x, k),
    }
    rows = []
    for label, run in runners.items():
        if label.split()[0] not in args.methods or ("256 K" in label and 256 * k >= len(x)) \
                or ("as sklearn" in label and SKLEARN_INIT_SIZE >= len(x)):
            continue
        try:
            cpu0 = time.process_time()
            fit_s, label_s, centroids, labels = run()
            cpu_s = time.process_time() - cpu0
        except ImportError as e:
            print(f"skipping {label}: {e}")
            continue
        dmin, nearest = nearest_centroids(x, centroids)
        rows.append(dict(
            set=name, method=label, fit=fit_s, label=label_s, total=fit_s + label_s, cpu=cpu_s,
            inertia=dmin.mean().item(), labels_are_nearest=bool(torch.equal(nearest, labels)),
            pnmi=unit_quality(phones.numpy(), labels.numpy())["pnmi"],
        ))
    return rows


def print_table(name: str, desc: str, rows: List[Dict]) -> None:
    print(f"\n{name}: {desc}")
    print("| method | fit s | label s | fit + label s | CPU s | inertia / frame | PNMI | time vs ours | CPU vs ours "
          "| inertia vs ours |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ours = rows[0] if rows and rows[0]["method"].startswith("ours") else None
    for r in rows:
        rel_t = f"{r['total'] / ours['total']:.1f}x" if ours else "-"
        rel_c = f"{r['cpu'] / ours['cpu']:.1f}x" if ours else "-"
        rel_i = f"{r['inertia'] / ours['inertia']:.4f}" if ours else "-"
        print(f"| {r['method']} | {r['fit']:.2f} | {r['label']:.2f} | {r['total']:.2f} | {r['cpu']:.2f} | "
              f"{r['inertia']:.4g} | {r['pnmi']:.3f} | {rel_t} | {rel_c} | {rel_i} |")
    if ours:
        for r in rows:
            if not r["method"].startswith("ours"):
                other = r["method"].split()[0]
                print(f"[{name}] fit + label time {other}/ours: {r['total'] / ours['total']:.1f}x "
                      f"(CPU time {r['cpu'] / ours['cpu']:.1f}x); "
                      f"inertia ours/{other}: {ours['inertia'] / r['inertia']:.4f}")


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["mfcc", "layer"], choices=["mfcc", "layer"])
    parser.add_argument("--methods", nargs="+", default=["ours", "sklearn", "faiss"])
    parser.add_argument("--frames", type=int, default=200_000, help="mfcc set: frames (100 Hz)")
    parser.add_argument("--clusters", type=int, default=100, help="mfcc set: clusters")
    parser.add_argument("--layer-frames", type=int, default=100_000, help="layer set: frames (50 Hz)")
    parser.add_argument("--layer-dim", type=int, default=768)
    parser.add_argument("--layer-clusters", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3, help="ours: passes over the data")
    parser.add_argument("--sklearn-n-init", type=int, default=20, help="mfcc set; fairseq's learn_kmeans.py uses 20")
    parser.add_argument("--layer-sklearn-n-init", type=int, default=1,
                        help="layer set: each init is k-means++ on 30000 rows, 135 s at 768-d, K=500 on a loaded "
                             "core; 1 keeps the run short and only flatters sklearn's time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="ours only (sklearn and faiss-cpu run on CPU)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, to check that it runs")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.frames, args.clusters, args.layer_frames, args.layer_dim, args.layer_clusters = 3000, 8, 2000, 32, 16
        args.sklearn_n_init = args.layer_sklearn_n_init = 2
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass

    if torch.device(args.device).type == "cuda":
        # The process's first CUDA calls load kernels and make the cuBLAS handle: not ours to time.
        run_ours(torch.randn(4096, 39), 16, 1, args.device)
        run_ours(torch.randn(4096, args.layer_dim), 16, 1, args.device)

    rows = []
    if "mfcc" in args.sets:
        x, phones = mfcc_like(args.frames)
        r = bench_set("mfcc", x, phones, args.clusters, args.sklearn_n_init, args)
        print_table("mfcc", f"MFCC-like {args.frames} x 39, K={args.clusters}, {args.threads} thread(s)", r)
        rows += r
    if "layer" in args.sets:
        x, phones = layer_like(args.layer_frames, args.layer_dim)
        r = bench_set("layer", x, phones, args.layer_clusters, args.layer_sklearn_n_init, args)
        print_table("layer", f"layer-6-like {args.layer_frames} x {args.layer_dim}, K={args.layer_clusters}, "
                    f"{args.threads} thread(s)", r)
        rows += r
    return rows


if __name__ == "__main__":
    main()
