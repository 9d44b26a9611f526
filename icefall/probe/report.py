"""One table of probing results (a row per upstream, a column per task) and a plot of the learned
layer weights, from the ``results.json`` files of :mod:`icefall.probe.train`.

    python -m icefall.probe.report --exp-dir probe/exp --out probe/results

reads ``<exp-dir>/<upstream name>/<task>/results.json`` and writes ``<out>.md`` and
``<out>-weights.png`` (one panel per upstream with more than one layer, a line per task).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Dict, Sequence

from icefall.probe.train import PROTOCOL
from icefall.probe.tasks import TASKS

Results = Dict[str, Dict[str, dict]]  # upstream name -> task -> results.json


def read_results(exp_dir: Path) -> Results:
    """``{upstream: {task: results}}`` of every ``<exp_dir>/<upstream>/<task>/results.json``."""
    out: Results = {}
    # fbank (the reference row) first, then the upstreams by name
    paths = sorted(Path(exp_dir).glob("*/*/results.json"), key=lambda p: (p.parent.parent.name != "fbank", str(p)))
    for path in paths:
        out.setdefault(path.parent.parent.name, {})[path.parent.name] = json.loads(path.read_text())
    return out


def results_table(results: Results, tasks: Sequence[str] = TASKS) -> str:
    """Markdown: a row per upstream, a column per task (its metric; '-' when not run)."""
    tasks = [t for t in tasks if any(t in r for r in results.values())]
    arrows = {t: "↑" if PROTOCOL[t]["higher"] else "↓" for t in tasks}
    extra = {"asr": " (CER%)", "qbe": " (MTWV)"}
    lines = ["| upstream | " + " | ".join(f"{t.upper()} {PROTOCOL[t]['metric']}{extra.get(t, '')} {arrows[t]}"
                                         for t in tasks) + " |",
             "|---" * (len(tasks) + 1) + "|"]
    for name, by_task in results.items():
        cells = ["-" if t not in by_task else _cell(by_task[t]) for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(r: dict) -> str:
    """The task's metric, with ASR's CER and QbE's MTWV beside it."""
    second = r.get("CER%") if r["task"] == "asr" else r.get("MTWV") if r["task"] == "qbe" else None
    return f"{r['value']:.2f}" + ("" if second is None else f" ({second:.2f})")


def plot_layer_weights(results: Results, path: Path) -> Path:
    """One panel per upstream with several layers: the softmax layer weights of each task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = {n: r for n, r in results.items()
              if any(len(x.get("layer_weights", [])) > 1 for x in r.values())}
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(4 * max(len(models), 1), 3), squeeze=False)
    for ax, (name, by_task) in zip(axes[0], models.items()):
        for task, r in by_task.items():
            if len(r.get("layer_weights", [])) > 1:
                ax.plot(range(len(r["layer_weights"])), r["layer_weights"], marker="o", label=task)
        ax.set_xticks(range(max(len(r.get("layer_weights", [])) for r in by_task.values())))
        ax.set_title(name)
        ax.set_xlabel("layer (0 = front end)")
        ax.set_ylabel("softmax weight")
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="writes <out>.md and <out>-weights.png")
    args = parser.parse_args(argv)
    results = read_results(args.exp_dir)
    if not results:
        raise FileNotFoundError(f"{args.exp_dir}: no */*/results.json (run probe.py first)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md = args.out.with_name(args.out.name + ".md")
    tmp = md.with_name(f".tmp{os.getpid()}.{md.name}")
    tmp.write_text(results_table(results))
    os.replace(tmp, md)
    plot_layer_weights(results, args.out.with_name(args.out.name + "-weights.png"))
    print(md.read_text(), end="")


if __name__ == "__main__":
    main()
