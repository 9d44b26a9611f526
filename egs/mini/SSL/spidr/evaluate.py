#!/usr/bin/env python3
"""Per-layer ABX, PNMI and MAP@R of a SpidR/DinoSR (or HuBERT) checkpoint on the mini corpus,
with the input fbank as the reference row.

    cd egs/mini/SSL
    ./spidr/evaluate.py --checkpoint spidr/exp/epoch-3.pt --out-dir spidr/exp/eval-epoch-3

Writes ``layers.md`` (table), ``layers.png`` (plot) and ``layers.json``; every option: ``--help``;
the logic is in ``icefall.eval.layers``.
"""
from icefall.eval.layers import get_parser, main

if __name__ == "__main__":
    main(get_parser(prefix="mini", manifest_dir="data/fbank", split="dev", num_clusters=50).parse_args())
