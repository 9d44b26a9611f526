#!/usr/bin/env python3
"""Time to the first batch from lazy cut manifests of 1,000 and 100,000 cuts.

The start-up of training should not grow with the corpus: manifests are read lazily and the
bucketing sampler reads only a bounded prefix (``--sampler-buffer-size``) before its first
batch. The cuts are synthetic (random durations) and point at a few real short WAV files.
As a reference measured in the same run, the eager way (``load_manifest``, the whole file
parsed up front) is timed too.

    python test/benchmarks/bench_first_batch.py [--sizes 1000 100000] [--repeats 5]

Prints a table; "ratio" is the time at each size over the time at the smallest size.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from icefall.data.datamodule import DataModule  # noqa: E402


def write_manifest(path: Path, num_cuts: int, wavs, rng: np.random.Generator) -> None:
    """num_cuts cuts of random duration (1 s up to the file length) over a few short files."""
    from lhotse import MonoCut, Recording, SupervisionSegment
    from lhotse.serialization import SequentialJsonlWriter

    recs = [Recording.from_file(w) for w in wavs]
    with SequentialJsonlWriter(path) as writer:
        for i in range(num_cuts):
            rec = recs[i % len(recs)]
            dur = float(min(rec.duration, rng.uniform(1.0, rec.duration)))
            cid = f"cut{i:07d}"
            sup = SupervisionSegment(id=cid, recording_id=rec.id, start=0.0, duration=dur,
                                     text="HELLO WORLD")
            writer.write(MonoCut(id=cid, start=0.0, duration=dur, channel=0, recording=rec,
                                 supervisions=[sup], custom={"kmeans": " ".join(
                                     ["1"] * int(round(dur * 50)))}))


def first_batch_seconds(path: Path, lazy: bool, args) -> float:
    from lhotse import load_manifest, load_manifest_lazy

    t0 = time.perf_counter()
    cuts = load_manifest_lazy(path) if lazy else load_manifest(path)
    dm = DataModule(args)
    cuts = cuts.filter(dm.cut_filter(label_rate=50))
    dl = dm.train_dataloader(cuts, dm.ssl_dataset(train=True))
    batch = next(iter(dl))
    assert batch["inputs"].shape[0] > 0
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100000])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eager", type=int, default=1, help="also time eager loading (1/0)")
    opts = p.parse_args()
    torch.set_num_threads(1)

    parser = argparse.ArgumentParser()
    DataModule.add_arguments(parser)
    args = parser.parse_args(["--input-type", "wav", "--num-workers", "0",
                              "--max-duration", "200"])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wavs = []
        for k in range(4):  # a few real 16 kHz files, 15-16 s each
            w = tmp / f"a{k}.wav"
            sf.write(str(w), (0.1 * rng.standard_normal(16000 * (15 + k % 2))).astype(
                np.float32), 16000)
            wavs.append(w)
        rows = []
        for n in opts.sizes:
            path = tmp / f"cuts_{n}.jsonl.gz"
            t = time.perf_counter()
            write_manifest(path, n, wavs, rng)
            write_s = time.perf_counter() - t
            lazy = [first_batch_seconds(path, True, args) for _ in range(opts.repeats)]
            eager = [first_batch_seconds(path, False, args) for _ in range(opts.repeats)] \
                if opts.eager else [float("nan")]
            rows.append((n, statistics.median(lazy), statistics.median(eager), write_s,
                         path.stat().st_size))
    base_lazy, base_eager = rows[0][1], rows[0][2]
    print(f"buffer size {args.sampler_buffer_size}, max duration {args.max_duration} s, "
          f"median of {opts.repeats}, torch threads 1")
    print(f"{'cuts':>8} | {'manifest MB':>11} | {'lazy first batch s':>18} | {'ratio':>5} | "
          f"{'eager first batch s':>19} | {'ratio':>5}")
    for n, lazy, eager, _, size in rows:
        print(f"{n:>8} | {size / 2**20:>11.2f} | {lazy:>18.3f} | {lazy / base_lazy:>5.2f} | "
              f"{eager:>19.3f} | {eager / base_eager:>5.2f}")


if __name__ == "__main__":
    main()
