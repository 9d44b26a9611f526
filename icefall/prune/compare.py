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
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from icefall.eval.mapsswe import mapsswe
from icefall.eval.wer import Result, compute_cer, compute_wer, read_transcripts


def char_results(results: Sequence[Result]) -> List[Result]:
    """Word results -> character results (words joined by spaces, as ``compute_cer``)."""
    return [(cut, list(" ".join(ref)), list(" ".join(hyp))) for cut, ref, hyp in results]


def recogs_path(exp_dir: Path, split: str, method: str = "ctc-greedy-search") -> Path:
    """Where ``decode.py --checkpoint <exp_dir>/pruned.pt --exp-dir <exp_dir>`` writes."""
    return Path(exp_dir) / method / f"recogs-{split}-{method}-pruned.txt"


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


def plot_sweep(rows: Sequence[Dict], png: Path, title: str = "") -> None:
    """WER and CER against the sparsity of the pruned layers, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    by_method: Dict[str, List[Dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    for ax, key, label in ((axes[0], "wer", "WER (%)"), (axes[1], "cer", "CER (%)")):
        for method, rs in by_method.items():
            if method == "none":
                for r, style in zip(rs, ["--", ":", "-."] * len(rs)):
                    ax.axhline(r[key], color="black", linestyle=style, label=f"dense ({r['name']})")
                continue
            rs = sorted(rs, key=lambda r: r["sparsity_pruned_layers"])
            ax.plot([100 * r["sparsity_pruned_layers"] for r in rs], [r[key] for r in rs], marker="o", label=method)
        ax.set_xlabel("sparsity of the pruned layers (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def _name_dir(spec: str) -> Tuple[str, Path]:
    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"expected NAME=EXP_DIR, got {spec!r}")
    name, path = spec.split("=", 1)
    return name, Path(path)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=_name_dir, required=True, help="NAME=EXP_DIR of the dense system")
    parser.add_argument("--systems", type=_name_dir, nargs="+", required=True, help="NAME=EXP_DIR ...")
    parser.add_argument("--split", default="test")
    parser.add_argument("--decoding-method", default="ctc-greedy-search")
    parser.add_argument("--png", type=Path, default=None, help="write the WER/CER-vs-sparsity plot here")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    base = system_row(*args.baseline, None, args.split, args.decoding_method)
    rows = [base] + [system_row(n, d, base["results"], args.split, args.decoding_method) for n, d in args.systems]
    print(markdown_table(rows), end="")
    if args.png is not None:
        plot_sweep(rows, args.png, args.title)
    return rows


if __name__ == "__main__":
    main()
