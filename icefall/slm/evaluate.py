"""Score a unit LM on the zero-shot benchmarks (``icefall.slm.benchmarks``).

    python -m icefall.slm.evaluate --checkpoint slm/exp-km100/epoch-5.pt \\
        --pairs data/slm-bench/pairs.jsonl --units data/slm/km100/mini_cuts_bench.jsonl.gz \\
        --out slm/exp-km100/zero-shot-epoch-5.json

``--units``: the benchmark members' units, extracted exactly as the LM's training units were (a
cut manifest with ``custom[--units-key]``, or a ``units_bench.txt``). Writes every accuracy with
its 95% Wilson interval (per task and per phenomenon; normalised and summed log-probabilities) as
JSON and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict

from icefall.slm.benchmarks import member_scores, read_pairs, score_pairs
from icefall.slm.lm import load_unit_lm, load_units
from icefall.utils import atomic_write_path, str2bool


def markdown_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """One row per benchmark (and phenomenon): accuracy with its 95% interval, normalised and
    summed log-probabilities."""
    lines = ["| benchmark | pairs | normalized % (95% CI) | summed % (95% CI) |", "|---|---:|---:|---:|"]
    for key, r in results["normalized"].items():
        cells = [f"{100 * x['accuracy']:.1f} ({100 * x['ci_low']:.1f}-{100 * x['ci_high']:.1f})"
                 for x in (r, results["summed"][key])]
        lines.append(f"| {key} | {r['n']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a unit-LM training checkpoint (epoch-N.pt)")
    p.add_argument("--use-averaged-model", type=str2bool, default=True,
                   help="score with the running average of the whole run (model_avg) rather than the last weights")
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--units", type=Path, required=True)
    p.add_argument("--units-key", default="kmeans")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True, help="JSON file")
    p.add_argument("--member-scores", type=Path, default=None,
                   help="also write '<member id> <log-prob>' lines here (icefall.slm.zerospeech --scores)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    lm = load_unit_lm(args.checkpoint, args.use_averaged_model, args.device)
    pairs, units = read_pairs(args.pairs), load_units(args.units, args.units_key)
    results = score_pairs(lm, pairs, units, args.batch_size)
    if args.member_scores is not None:
        scores = member_scores(lm, pairs, units, args.batch_size)
        tmp = atomic_write_path(args.member_scores)
        tmp.write_text("".join(f"{k} {v:.6f}\n" for k, v in scores.items()))
        tmp.replace(args.member_scores)
    tmp = atomic_write_path(args.out)
    tmp.write_text(json.dumps({"checkpoint": str(args.checkpoint), "units": str(args.units),
                               "averaged": args.use_averaged_model, "results": results}, indent=1) + "\n")
    tmp.replace(args.out)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
