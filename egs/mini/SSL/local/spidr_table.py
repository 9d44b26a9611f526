#!/usr/bin/env python3
"""Side-by-side table of SpidR and DinoSR runs: per-layer ABX / PNMI / MAP@R (from
``spidr/evaluate.py``'s ``layers.json``) and codebook perplexity at the start and end of
training (from the training log).

    python3 local/spidr_table.py --runs SpidR=spidr/exp-spidr DinoSR=spidr/exp-dinosr --epoch 3

Each run directory holds ``epoch-<N>.pt``, ``log/log-pretrain-*`` (all of them are read, so resumed
runs count; batches after epoch N are left out) and ``eval-epoch-<N>/layers.json``.
"""
import argparse
import glob
import json
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from icefall.checkpoint import load_file
from icefall.eval.report import HEADER, SCALE

BATCH = re.compile(r"Epoch \d+, batch \d+, global (\d+):.*?codebook_ppl=([\d.]+), pred_ppl=([\d.]+)")
VALID = re.compile(r"Validation at batch (\d+):.*?codebook_ppl=([\d.]+), pred_ppl=([\d.]+)")


def perplexities(log: Path) -> Tuple[List[Tuple[int, float, float]], List[Tuple[int, float, float]]]:
    """(training, validation) lists of (global batch, codebook ppl, prediction ppl) in order.
    Training entries are the logger's running windows (``--log-interval`` batches)."""
    train, valid = [], []
    for line in log.read_text().splitlines():
        if m := VALID.search(line):
            valid.append((int(m[1]), float(m[2]), float(m[3])))
        elif m := BATCH.search(line):
            train.append((int(m[1]), float(m[2]), float(m[3])))
    return train, valid


def fmt(v: Optional[float], metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v * SCALE[metric]:.2f}" if SCALE[metric] != 1 else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=EXP_DIR, e.g. SpidR=spidr/exp-spidr")
    parser.add_argument("--epoch", type=int, required=True, help="evaluated checkpoint: <exp>/eval-epoch-<N>")
    parser.add_argument("--codebook-size", type=int, default=64)
    args = parser.parse_args()
    runs = [r.split("=", 1) for r in args.runs]

    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    print(f"Codebook perplexity (codebook size {args.codebook_size}; 1 = collapsed), averaged over heads:\n")
    print("| run | train, first log window | train, last log window | dev, last validation | prediction ppl, last window |")
    print("|---|---|---|---|---|")
    for name, exp in runs:
        results[name] = json.loads((Path(exp) / f"eval-epoch-{args.epoch}" / "layers.json").read_text())["results"]
        logs = sorted(glob.glob(f"{exp}/log/log-pretrain-*"))  # named by start time: resumed runs too
        if not logs:
            raise FileNotFoundError(f"{exp}/log: no log-pretrain-* file")
        # only the batches up to the evaluated checkpoint
        last = load_file(Path(exp) / f"epoch-{args.epoch}.pt")["params"]["batch_idx_train"]
        train, valid = [], []
        for log in logs:
            t, v = perplexities(Path(log))
            train += [e for e in t if e[0] <= last]
            valid += [e for e in v if e[0] <= last]
        if not train:
            raise ValueError(f"{exp}/log: no 'codebook_ppl' in any batch line up to batch {last}")
        v = f"{valid[-1][1]:.2f} (batch {valid[-1][0]})" if valid else "-"
        print(f"| {name} | {train[0][1]:.2f} (batch {train[0][0]}) | {train[-1][1]:.2f} (batch {train[-1][0]}) "
              f"| {v} | {train[-1][2]:.2f} |")

    metrics = ["abx_within", "abx_across", "pnmi", "pnmi_codebook", "mapr"]
    print("\nPer layer on dev (fbank: the 80-d input features, the reference row):\n")
    print("| layer | " + " | ".join(f"{name} {HEADER[m]}" for name, _ in runs for m in metrics) + " |")
    print("|---" * (1 + len(runs) * len(metrics)) + "|")
    layers = sorted({k for r in results.values() for k in r}, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    for layer in layers:
        cells = [fmt(results[name].get(layer, {}).get(m), m) for name, _ in runs for m in metrics]
        print(f"| {layer} | " + " | ".join(cells) + " |")

    print("\nBest layer (lowest ABX across) vs fbank:\n")
    print("| run | best layer | ABX within (%) | ABX across (%) | fbank ABX within (%) | fbank ABX across (%) |")
    print("|---|---|---|---|---|---|")
    for name, _ in runs:
        r = results[name]
        best = min((k for k in r if k.isdigit()), key=lambda k: r[k]["abx_across"])
        fb = r.get("fbank", {})
        print(f"| {name} | {best} | {fmt(r[best]['abx_within'], 'abx_within')} | {fmt(r[best]['abx_across'], 'abx_across')} "
              f"| {fmt(fb.get('abx_within'), 'abx_within')} | {fmt(fb.get('abx_across'), 'abx_across')} |")


if __name__ == "__main__":
    main()
