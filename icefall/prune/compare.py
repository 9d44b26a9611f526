"""Compare pruned systems with their dense baseline: error rates, MAPSSWE, sparsity, size.

Each system is an experiment directory written by ``icefall.prune.finetune`` (its
``prune-summary.json``) and decoded by ``decode.py --checkpoint <exp>/pruned.pt`` (its
``<method>/recogs-<split>-<method>-pruned.txt``)::

    python -m icefall.prune.compare --split test --baseline dense=zipformer/exp-dense \\
        --systems gates-70=zipformer/exp-gates-70 ump-70=zipformer/exp-ump-70 --png sweep.png

prints a markdown table: sparsity of the pruned layers and of the whole model, WER and CER,
the two-sided MAPSSWE p-value against the baseline on word errors and on character errors
(the same test over characters, spaces included, as ``compute_cer`` counts them), and the
compact file's size. "Lossless" (the paper's criterion) = not significantly worse at 0.05.

A whole sweep (``egs/mini/SSL/local/prune_sweep.sh``, one ``--root`` per seed)::

    python -m icefall.prune.compare --sweep hubert/sweep/seed42 hubert/sweep/seed43 \
        --decoding-method ctc-lexicon-lm --png figure2.png

compares every ``<root>/exp-<method>-<target>`` with its own root's ``exp-dense`` and prints, per
method and target, the mean and range over seeds, each seed's p-value, whether it is lossless in
every seed, and the highest such sparsity per method (the arrows of the paper's Figure 2, which
the plot draws).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from icefall.eval.mapsswe import mapsswe
from icefall.eval.wer import Result, compute_cer, compute_wer, read_transcripts


def char_results(results: Sequence[Result]) -> List[Result]:
    """Word results -> character results (words joined by spaces, as ``compute_cer``)."""
    return [(cut, list(" ".join(ref)), list(" ".join(hyp))) for cut, ref, hyp in results]


def recogs_path(exp_dir: Path, split: str, method: str = "ctc-greedy-search") -> Path:
    """Where ``decode.py --checkpoint <exp_dir>/pruned.pt --exp-dir <exp_dir>`` writes. Methods
    whose result names carry their settings (``ctc-lexicon-lm-beam-size-..-pruned``) match by
    pattern; more than one match is an error (say which by removing the others)."""
    exact = Path(exp_dir) / method / f"recogs-{split}-{method}-pruned.txt"
    found = sorted(exact.parent.glob(f"recogs-{split}-{method}-*pruned.txt"))
    if exact.is_file() or not found:
        return exact
    if len(found) > 1:
        raise ValueError(f"{exact.parent}: {len(found)} decodings of {split} with {method}: "
                         + ", ".join(f.name for f in found))
    return found[0]


def system_row(name: str, exp_dir: Path, baseline: Optional[List[Result]], split: str,
               method: str = "ctc-greedy-search") -> Dict:
    """Numbers of one system (see the module docstring); p-values None for the baseline."""
    summary_file = Path(exp_dir) / "prune-summary.json"
    if not summary_file.is_file():
        raise FileNotFoundError(f"{summary_file} not found: run prune.py with --exp-dir {exp_dir}")
    summary = json.loads(summary_file.read_text())
    recogs = recogs_path(exp_dir, split, method)
    if not recogs.is_file():
        raise FileNotFoundError(f"{recogs} not found: decode {exp_dir}/pruned.pt first")
    results = read_transcripts(recogs)
    row = dict(name=name, **summary, wer=compute_wer(results).wer, cer=compute_cer(results).wer,
               p_word=None, p_char=None, results=results)
    if baseline is not None:
        word = mapsswe(results, baseline)
        row["p_word"] = word.p_value
        row["p_char"] = mapsswe(char_results(results), char_results(baseline)).p_value
        row["lossless"] = is_lossless(word.p_value, word.mean_diff)
    return row


def is_lossless(p_value: float, mean_diff: float, alpha: float = 0.05) -> bool:
    """No significant increase of errors: the difference (pruned - baseline) is not
    significant at ``alpha``, or the pruned system makes fewer errors."""
    return p_value >= alpha or mean_diff <= 0


def _p(p: Optional[float]) -> str:
    return "-" if p is None else f"{p:.3g}"


def _yes(flag: Optional[bool]) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def markdown_table(rows: Sequence[Dict]) -> str:
    lines = [
        "| system | target (%) | sparsity, pruned layers (%) | sparsity, whole model (%) | WER (%) | CER (%) "
        "| MAPSSWE p (words) | MAPSSWE p (chars) | lossless (words) | compact size (KiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        target = "-" if r["method"] == "none" else f"{100 * r['target_sparsity']:.0f}"
        lines.append(
            f"| {r['name']} | {target} | {100 * r['sparsity_pruned_layers']:.2f} | "
            f"{100 * r['sparsity_model']:.2f} | {r['wer']:.2f} | {r['cer']:.2f} | {_p(r['p_word'])} | "
            f"{_p(r['p_char'])} | {_yes(r.get('lossless'))} | {r['compact_bytes'] / 1024:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _error_rate_figure(figsize: Tuple[float, float]):
    """A figure with two panels, WER and CER against sparsity (filled by the caller)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, 2, figsize=figsize)


def _save_error_rate_figure(fig, axes, png: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    for ax, label in zip(axes, ("WER (%)", "CER (%)")):
        ax.set_xlabel("sparsity of the pruned layers (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def plot_sweep(rows: Sequence[Dict], png: Path, title: str = "") -> None:
    """WER and CER against the sparsity of the pruned layers, one line per method."""
    fig, axes = _error_rate_figure((9, 3.6))
    by_method: Dict[str, List[Dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    for ax, key in zip(axes, ("wer", "cer")):
        for method, rs in by_method.items():
            if method == "none":
                for r, style in zip(rs, ["--", ":", "-."] * len(rs)):
                    ax.axhline(r[key], color="black", linestyle=style, label=f"dense ({r['name']})")
                continue
            rs = sorted(rs, key=lambda r: r["sparsity_pruned_layers"])
            ax.plot([100 * r["sparsity_pruned_layers"] for r in rs], [r[key] for r in rs], marker="o", label=method)
    _save_error_rate_figure(fig, axes, png, title)


def sweep_rows(roots: Sequence[Path], split: str = "test",
               method: str = "ctc-greedy-search") -> List[Dict]:
    """Every decoded ``exp-<system>-<target>`` of each sweep root against the root's ``exp-dense``.
    Rows as :func:`system_row` plus ``system`` (name without the target), ``seed`` (the root's
    name), ``wall_s`` (training wall clock, None if not recorded); the dense rows come first,
    with ``system == "dense"``. Undecoded or unfinished systems are skipped and named on stderr."""
    rows: List[Dict] = []
    for root in map(Path, roots):
        base = system_row("dense", root / "exp-dense", None, split, method)
        base.update(system="dense", seed=root.name, wall_s=_wall(root / "exp-dense"))
        rows.append(base)
        for exp in sorted(root.glob("exp-*-*")):
            system, _, target = exp.name[len("exp-"):].rpartition("-")
            if not target.isdigit():
                continue
            try:
                row = system_row(exp.name[len("exp-"):], exp, base["results"], split, method)
            except FileNotFoundError as e:
                print(f"skipping {exp}: {e}", file=sys.stderr)
                continue
            row.update(system=system, seed=root.name, wall_s=_wall(exp))
            rows.append(row)
    return rows


def _wall(exp: Path) -> Optional[float]:
    f = exp / "wall-seconds"
    return float(f.read_text()) if f.is_file() else None


def summarize_sweep(rows: Sequence[Dict]) -> Tuple[List[Dict], Dict[str, Optional[float]]]:
    """Rows of :func:`sweep_rows` grouped by (system, target) over seeds: mean and min/max of
    sparsity, WER and CER, the seeds' p-values, ``lossless`` (in every seed) and mean wall clock.
    Also returns, per pruning system, the highest target that is lossless in every seed (None
    if none is): the paper's arrows."""
    groups: Dict[Tuple[str, float], List[Dict]] = {}
    for r in rows:
        target = 0.0 if r["system"] == "dense" else r["target_sparsity"]
        groups.setdefault((r["system"], target), []).append(r)
    out = []
    for (system, target), rs in groups.items():
        walls = [r["wall_s"] for r in rs if r["wall_s"] is not None]
        out.append(dict(
            system=system, target=target, seeds=len(rs),
            sparsity=_mean(r["sparsity_pruned_layers"] for r in rs),
            sparsity_range=_range(r["sparsity_pruned_layers"] for r in rs),
            wer=_mean(r["wer"] for r in rs), wer_range=_range(r["wer"] for r in rs),
            cer=_mean(r["cer"] for r in rs), cer_range=_range(r["cer"] for r in rs),
            p_word=[r["p_word"] for r in rs], p_char=[r["p_char"] for r in rs],
            lossless=None if system == "dense" else all(r["lossless"] for r in rs),
            wall_s=_mean(walls) if walls else None,
        ))
    out.sort(key=lambda g: (g["system"] != "dense", g["system"], g["target"]))
    highest = {system: max((g["target"] for g in out if g["system"] == system and g["lossless"]), default=None)
               for system in {g["system"] for g in out} - {"dense"}}
    return out, highest


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def _range(xs) -> Tuple[float, float]:
    xs = list(xs)
    return min(xs), max(xs)


def sweep_markdown(groups: Sequence[Dict], highest: Dict[str, Optional[float]]) -> str:
    lines = [
        "| system | target (%) | seeds | sparsity, pruned layers (%) | WER (%) mean [min, max] "
        "| CER (%) mean [min, max] | MAPSSWE p (words), per seed | lossless in every seed | train wall (s) |",
        "|---|---:|---:|---:|---|---|---|---|---:|",
    ]
    for g in groups:
        target = "-" if g["system"] == "dense" else f"{100 * g['target']:.0f}"
        wall = "-" if g["wall_s"] is None else f"{g['wall_s']:.0f}"
        lines.append(
            f"| {g['system']} | {target} | {g['seeds']} | {100 * g['sparsity']:.2f} | "
            f"{g['wer']:.2f} [{g['wer_range'][0]:.2f}, {g['wer_range'][1]:.2f}] | "
            f"{g['cer']:.2f} [{g['cer_range'][0]:.2f}, {g['cer_range'][1]:.2f}] | "
            f"{' / '.join(_p(p) for p in g['p_word'])} | {_yes(g['lossless'])} | {wall} |")
    lines.append("")
    lines.append("Highest sparsity lossless in every seed (target): " + ", ".join(
        f"{s} {'none' if t is None else f'{100 * t:.0f}%'}" for s, t in sorted(highest.items())))
    return "\n".join(lines) + "\n"


def plot_figure2(groups: Sequence[Dict], highest: Dict[str, Optional[float]], png: Path,
                 title: str = "") -> None:
    """The paper's Figure 2 at our scale: WER and CER against the sparsity of the pruned layers,
    one line per method (mean over seeds, bars from min to max), the dense baseline as a band,
    and an arrow at each method's highest sparsity that is lossless in every seed."""
    fig, axes = _error_rate_figure((10, 4))
    dense = [g for g in groups if g["system"] == "dense"]
    systems = sorted({g["system"] for g in groups} - {"dense"})
    for ax, key in zip(axes, ("wer", "cer")):
        for d in dense:
            ax.axhline(d[key], color="black", linestyle="--", label="dense (same budget)")
            ax.axhspan(*d[f"{key}_range"], color="black", alpha=0.08)
        for i, system in enumerate(systems):
            gs = sorted((g for g in groups if g["system"] == system), key=lambda g: g["sparsity"])
            xs = [100 * g["sparsity"] for g in gs]
            ys = [g[key] for g in gs]
            err = [[g[key] - g[f"{key}_range"][0] for g in gs], [g[f"{key}_range"][1] - g[key] for g in gs]]
            line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=system)
            top = highest.get(system)
            if key == "wer" and top is not None:
                g = next(g for g in gs if g["target"] == top)
                ax.annotate("", xy=(100 * g["sparsity"], g[key]), xytext=(0, 22 + 6 * i),
                            textcoords="offset points",
                            arrowprops=dict(arrowstyle="->", color=line[0].get_color(), lw=2))
    _save_error_rate_figure(fig, axes, png, title)


def _name_dir(spec: str) -> Tuple[str, Path]:
    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"expected NAME=EXP_DIR, got {spec!r}")
    name, path = spec.split("=", 1)
    return name, Path(path)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=_name_dir, help="NAME=EXP_DIR of the dense system")
    parser.add_argument("--systems", type=_name_dir, nargs="+", help="NAME=EXP_DIR ...")
    parser.add_argument("--sweep", type=Path, nargs="+",
                        help="instead of --baseline/--systems: prune_sweep.sh roots, one per seed")
    parser.add_argument("--split", default="test")
    parser.add_argument("--decoding-method", default="ctc-greedy-search")
    parser.add_argument("--png", type=Path, default=None, help="write the WER/CER-vs-sparsity plot here")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    if args.sweep:
        groups, highest = summarize_sweep(sweep_rows(args.sweep, args.split, args.decoding_method))
        print(sweep_markdown(groups, highest), end="")
        if args.png is not None:
            plot_figure2(groups, highest, args.png, args.title)
        return groups
    if args.baseline is None or not args.systems:
        parser.error("give --baseline and --systems, or --sweep")
    base = system_row(*args.baseline, None, args.split, args.decoding_method)
    rows = [base] + [system_row(n, d, base["results"], args.split, args.decoding_method) for n, d in args.systems]
    print(markdown_table(rows), end="")
    if args.png is not None:
        plot_sweep(rows, args.png, args.title)
    return rows


if __name__ == "__main__":
    main()
