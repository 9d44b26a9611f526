#!/usr/bin/env python3
"""A seeded random subset of a cut manifest (kept in id order), for short training runs.

    python3 local/subset_cuts.py data/fbank/mini_cuts_train-unlabeled.jsonl.gz \\
        data/fbank-third/mini_cuts_train-unlabeled.jsonl.gz --fraction 0.333
"""
import argparse
import os
import random
from pathlib import Path

from icefall.utils import atomic_write_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--fraction", type=float, required=True, help="share of the cuts to keep, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from lhotse import CutSet, load_manifest

    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    cuts = list(load_manifest(args.src))
    random.Random(args.seed).shuffle(cuts)
    keep = sorted(cuts[: max(1, round(args.fraction * len(cuts)))], key=lambda c: c.id)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_write_path(args.dst)
    CutSet.from_cuts(keep).to_file(tmp)
    os.replace(tmp, args.dst)
    print(f"{len(keep)} of {len(cuts)} cuts ({sum(c.duration for c in keep) / 3600:.2f} h) -> {args.dst}")


if __name__ == "__main__":
    main()
