#!/usr/bin/env python3
"""Print the mini recipe's WER table from the decoders' wer-summary files.

    python3 local/summarize.py --exp-root zipformer

Reads ``<exp-root>/<exp>/<method>/wer-summary-<split>-*.txt`` (PyTorch decoding) and
``<exp-root>/<exp>/onnx/<method>/wer-summary-<split>-*.txt`` (onnxruntime decoding).
"""
import argparse
import glob
from pathlib import Path

SYSTEMS = [
    ("exp-ft", "pretrained (HuBERT-style) + fine-tuned"),
    ("exp-scratch", "from scratch, same fine-tuning"),
    ("exp-ft/onnx", "pretrained + fine-tuned, ONNX"),
]


def latest_wer(pattern: str):
    """WER of the newest matching wer-summary file (line 2: ``setting<TAB>WER``)."""
    files = sorted(glob.glob(pattern), key=lambda f: Path(f).stat().st_mtime)
    if not files:
        return None
    return float(Path(files[-1]).read_text().splitlines()[1].split("\t")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-root", type=Path, default=Path("zipformer"))
    parser.add_argument("--method", default="ctc-greedy-search")
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    args = parser.parse_args()
    header = "| system | " + " | ".join(f"{s} WER %" for s in args.splits) + " |"
    print(header)
    print("|" + "---|" * (len(args.splits) + 1))
    for exp, name in SYSTEMS:
        cells = []
        for split in args.splits:
            w = latest_wer(str(args.exp_root / exp / args.method / f"wer-summary-{split}-*.txt"))
            cells.append("-" if w is None else f"{w:.2f}")
        if any(c != "-" for c in cells):
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
