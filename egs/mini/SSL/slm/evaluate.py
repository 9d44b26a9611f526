#!/usr/bin/env python3
"""Pair accuracies (with 95% intervals) of a unit LM on the zero-shot benchmarks.

    cd egs/mini/SSL
    ./slm/evaluate.py --checkpoint slm/exp-km100/epoch-5.pt --pairs data/slm-bench/pairs.jsonl \\
        --units data/slm/km100/mini_cuts_bench.jsonl.gz --out slm/exp-km100/zero-shot.json

The logic is in ``icefall.slm.evaluate``.
"""
from icefall.slm.evaluate import main

if __name__ == "__main__":
    main()
