#!/usr/bin/env python3
"""Zero-shot lexical / syntactic / story benchmarks spoken by the unseen test voices.

    cd egs/mini/SSL
    ./slm/build_benchmarks.py --out-dir data/slm-bench --num-pairs 300

Writes pairs.jsonl, FLAC audio and mini_{recordings,supervisions}_bench.jsonl.gz; the logic and
the definition of each benchmark are in ``icefall.slm.benchmarks`` (docs/slm.md).
"""
from icefall.slm.benchmarks import main

if __name__ == "__main__":
    main()
