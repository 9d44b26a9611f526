#!/usr/bin/env python3
"""The table of objectives/run_objectives.sh: per system, the pretraining run (updates, CPU and
wall time, the last validation's collapse indicators), the best layer's ABX / PNMI / MAP@R on dev
(fbank input as the reference row) and the fine-tuned model's WER/CER (greedy; lexicon + 3-gram
LM); and one plot of every system's per-layer ABX and MAP@R.

    python3 local/objectives_table.py hubert spidr ... scratch --root objectives --splits dev test

Reads ``<root>/exp-<system>/log/log-pretrain-*``, ``<root>/exp-<system>/eval/layers.json`` and
the newest ``recogs-<split>-*`` of ``<root>/ft-<system>/{ctc-greedy-search,ctc-lexicon-lm}/``;
writes ``<root>/layers.png``.
"""
import argparse
import glob
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from icefall.eval.mapsswe import mapsswe
from icefall.eval.wer import compute_cer, compute_wer, read_transcripts

STOP = re.compile(r"--stop-time-hours ([\d.]+) spent \((\w+) clock\) at batch (\d+), epoch (\d+)")
VALID = re.compile(r"Validation at batch \d+: (.*?)(?:; best valid loss|$)")
# Indicators of collapse, when the objective logs them (see docs/objectives.md).
INDICATORS = ("acc_masked", "codebook_ppl", "pred_ppl", "prob_ppl", "pred_std", "target_std")


def stamp(line: str) -> datetime:
    return datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")


def pretraining(exp: Path) -> Dict[str, str]:
    """Updates, budget and wall time of the run, and its last validation's indicators."""
    logs = sorted(glob.glob(f"{exp}/log/log-pretrain-*"))
    if not logs:
        raise FileNotFoundError(f"{exp}/log: no log-pretrain-* file")
    lines = [line for f in logs for line in Path(f).read_text().splitlines()]
    out = {"updates": "-", "budget": "-", "wall": "-", "indicators": "-"}
    stops = [(i, m) for i, line in enumerate(lines) if (m := STOP.search(line))]
    if stops:
        i, m = stops[-1]
        out["updates"] = f"{m[3]} (in epoch {m[4]})"
        out["budget"] = f"{float(m[1]) * 60:.3g} min {m[2]}"
        # wall: from the first log line of each (re)start to the stop (one start in practice)
        out["wall"] = f"{(stamp(lines[i]) - stamp(lines[0])).total_seconds() / 60:.1f} min"
    valid = [m[1] for line in lines if (m := VALID.search(line))]
    if valid:
        pairs = dict(kv.split("=", 1) for kv in valid[-1].split(", ") if "=" in kv)
        shown = [f"{k} {float(pairs[k]):.3g}" for k in INDICATORS if k in pairs]
        out["indicators"] = ", ".join(shown) or f"loss {float(pairs['loss']):.3g}"
    return out


def best_layers(results: Dict[str, Dict[str, float]]) -> Dict[str, Tuple[str, float]]:
    """Best layer (key, value) per metric over the model's layers (the fbank row excluded):
    ABX lowest, PNMI and MAP@R highest."""
    layers = {k: v for k, v in results.items() if k != "fbank"}
    best = {}
    for metric, better in (("abx_within", min), ("abx_across", min), ("pnmi", max), ("mapr", max)):
        k = better(layers, key=lambda k: layers[k][metric])
        best[metric] = (k, layers[k][metric])
    return best


def asr(ft: Path, splits: List[str]) -> Dict[Tuple[str, str], Optional[list]]:
    """{(split, method): recognition results} of the fine-tuned model (the newest recogs file);
    None where not decoded."""
    out = {}
    for s in splits:
        for m in ("ctc-greedy-search", "ctc-lexicon-lm"):
            files = sorted(glob.glob(f"{ft}/{m}/recogs-{s}-*.txt"), key=lambda f: Path(f).stat().st_mtime)
            out[(s, m)] = read_transcripts(Path(files[-1])) if files else None
    return out


def plot(curves: Dict[str, Dict[str, Dict[str, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, metric, label in zip(axes, ("abx_within", "abx_across", "mapr"),
                                 ("ABX within (%)", "ABX across (%)", "MAP@R (%)")):
        fbank = None
        for name, results in curves.items():
            layers = sorted((k for k in results if k != "fbank"), key=int)
            ax.plot([int(k) for k in layers], [100 * results[k][metric] for k in layers], marker="o", label=name)
            fbank = results.get("fbank", {}).get(metric, fbank)
        if fbank is not None:
            ax.axhline(100 * fbank, color="k", linestyle=":", label="fbank input")
        ax.set_xticks(sorted({int(k) for r in curves.values() for k in r if k != "fbank"}))
        ax.set_xlabel("layer (0 = front end)")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("objectives"))
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    parser.add_argument("systems", nargs="+")
    args = parser.parse_args()

    def pct(v: float) -> str:
        return f"{100 * v:.2f}"

    print("Pretraining (the budget counts the process's CPU time, one thread):\n")
    print("| system | updates | budget | wall | last validation |")
    print("|---|---|---|---|---|")
    curves = {}
    for s in args.systems:
        if s == "scratch":
            continue
        p = pretraining(args.root / f"exp-{s}")
        print(f"| {s} | {p['updates']} | {p['budget']} | {p['wall']} | {p['indicators']} |")
        curves[s] = json.loads((args.root / f"exp-{s}" / "eval" / "layers.json").read_text())["results"]

    print("\nBest layer on dev (layer in brackets; 0 = front end), the fine-tuned model's WER/CER % and,"
          " for the last split with the LM, MAPSSWE's p (words) against scratch:\n")
    cols = [f"{s} WER/CER {m}" for s in args.splits for m in ("greedy", "LM")] + ["p vs scratch"]
    print("| system | ABX within % | ABX across % | PNMI | MAP@R % | " + " | ".join(cols) + " |")
    print("|---" * (5 + len(cols)) + "|")
    if curves:
        ref = next(iter(curves.values()))["fbank"]
        print(f"| fbank input | {pct(ref['abx_within'])} | {pct(ref['abx_across'])} | {ref['pnmi']:.3f} | "
              f"{pct(ref['mapr'])} |" + " |" * len(cols))
    baseline = asr(args.root / "ft-scratch", args.splits)[(args.splits[-1], "ctc-lexicon-lm")]
    for s in args.systems:
        cells = ["-"] * 4
        if s in curves:
            b = best_layers(curves[s])
            cells = [f"{pct(b['abx_within'][1])} ({b['abx_within'][0]})", f"{pct(b['abx_across'][1])} ({b['abx_across'][0]})",
                     f"{b['pnmi'][1]:.3f} ({b['pnmi'][0]})", f"{pct(b['mapr'][1])} ({b['mapr'][0]})"]
        decoded = asr(args.root / f"ft-{s}", args.splits)
        for r in decoded.values():
            cells.append("-" if r is None else f"{compute_wer(r).wer:.2f} / {compute_cer(r).wer:.2f}")
        last = decoded[(args.splits[-1], "ctc-lexicon-lm")]
        cells.append("-" if last is None or baseline is None or s == "scratch" else f"{mapsswe(last, baseline).p_value:.2g}")
        print(f"| {s} | " + " | ".join(cells) + " |")
    if curves:
        plot(curves, args.root / "layers.png")
        print(f"\nPer-layer plot: {args.root / 'layers.png'}; per system: {args.root}/exp-<system>/eval/layers.png")


if __name__ == "__main__":
    main()
