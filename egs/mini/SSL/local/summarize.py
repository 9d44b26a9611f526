#!/usr/bin/env python3
"""Print the mini recipe's table of word and character error rates.

    python3 local/summarize.py --exp-root zipformer --splits dev test \
        --methods ctc-greedy-search ctc-lexicon ctc-lexicon-lm

Reads the newest ``recogs-<split>-*.txt`` of each system and decoding method:
``<exp-root>/<exp>/<method>/`` (PyTorch decoding) and ``<exp-root>/<exp>/onnx/<method>/``
(onnxruntime); one row per system and method that has results. CER is computed here
over the letters of each transcript (spaces count as symbols): on 10 minutes of labeled speech
a tiny model spells most words partly right, which WER alone does not show.
"""
import argparse
import glob
from pathlib import Path
from typing import Optional, Tuple

from icefall.eval.wer import compute_cer, compute_wer, read_transcripts

SYSTEMS = [
    ("exp-ft", "pretrained (HuBERT-style) + fine-tuned"),
    ("exp-scratch", "from scratch, same fine-tuning"),
    ("exp-ft/onnx", "pretrained + fine-tuned, ONNX"),
]

METHODS = {
    "ctc-greedy-search": "greedy",
    "ctc-lexicon": "lexicon",
    "ctc-lexicon-lm": "lexicon + LM",
}


def error_rates(pattern: str) -> Optional[Tuple[float, float]]:
    """(WER %, CER %) of the newest recogs file matching ``pattern``."""
    files = sorted(glob.glob(pattern), key=lambda f: Path(f).stat().st_mtime)
    if not files:
        return None
    results = read_transcripts(Path(files[-1]))
    return compute_wer(results).wer, compute_cer(results).wer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-root", type=Path, default=Path("zipformer"))
    parser.add_argument("--methods", nargs="+", default=["ctc-greedy-search"])
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    args = parser.parse_args()
    cols = [f"{s} {m} %" for s in args.splits for m in ("WER", "CER")]
    print("| system | decoding | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 2))
    for exp, name in SYSTEMS:
        for method in args.methods:
            cells = []
            for split in args.splits:
                r = error_rates(str(args.exp_root / exp / method / f"recogs-{split}-*.txt"))
                cells += ["-", "-"] if r is None else [f"{r[0]:.2f}", f"{r[1]:.2f}"]
            if any(c != "-" for c in cells):
                print(f"| {name} | {METHODS.get(method, method)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
