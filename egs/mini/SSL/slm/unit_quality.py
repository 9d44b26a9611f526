#!/usr/bin/env python3
"""ABX on one-hot units, PNMI and unit rates (before/after dedup) of units stored in cuts.

    cd egs/mini/SSL
    ./slm/unit_quality.py --cuts data/slm/km100/mini_cuts_dev.jsonl.gz --key kmeans \\
        --num-units 100 --frame-rate 100 --out data/slm/km100/quality-dev.json

The logic is in ``icefall.slm.unit_quality``.
"""
from icefall.slm.unit_quality import main

if __name__ == "__main__":
    main()
