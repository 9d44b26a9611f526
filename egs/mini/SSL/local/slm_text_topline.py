#!/usr/bin/env python3
"""Text topline of the zero-shot benchmarks: the same unit LM trained on the *letters* of the
train-unlabeled transcripts (one unit per letter, space and apostrophe) and scored on the
letters of each pair's texts. It shows what an LM of that size can get from the benchmarks
when the units are perfect and speaker-free (SpidR's text toplines play this role). Run from
egs/mini/SSL:

    ./local/slm_text_topline.py --pairs data/slm-bench/pairs.jsonl --exp-dir slm/exp-text \\
        --epochs 3 -- --num-layers 2 --dim 128 --num-heads 2 --ffn-dim 512

Arguments after ``--`` go to ``icefall.slm.train``. Writes ``<exp-dir>/zero-shot-epoch-E.json``.
"""
import argparse
import gzip
import json
from pathlib import Path

from icefall.slm.benchmarks import read_pairs, score_pairs
from icefall.slm.evaluate import markdown_table
from icefall.slm.lm import load_unit_lm
from icefall.slm.train import get_parser, run

ALPHABET = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letters(text: str):
    bad = sorted(set(text) - set(ALPHABET))
    if bad:
        raise ValueError(f"{text!r}: characters outside the alphabet: {bad}")
    return [ALPHABET.index(c) for c in text]


def write_letter_units(supervisions: Path, out: Path) -> None:
    with gzip.open(supervisions, "rt", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{s['id']} {' '.join(map(str, letters(s['text'])))}\n" for s in lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("train_opts", nargs="*", help="after --: options of icefall.slm.train")
    args = p.parse_args()
    train_txt, valid_txt = args.exp_dir / "letters_train-unlabeled.txt", args.exp_dir / "letters_dev.txt"
    write_letter_units(args.manifest_dir / "mini_supervisions_train-unlabeled.jsonl.gz", train_txt)
    write_letter_units(args.manifest_dir / "mini_supervisions_dev.jsonl.gz", valid_txt)
    train_args = get_parser(tensorboard=False).parse_args(
        ["--train-units", str(train_txt), "--valid-units", str(valid_txt), "--num-units", str(len(ALPHABET)),
         "--exp-dir", str(args.exp_dir), "--num-epochs", str(args.epochs)] + args.train_opts)
    run(0, 1, train_args)
    pairs = read_pairs(args.pairs)
    units = {p.member_id(m): letters(p.text(m)) for p in pairs for m in ("good", "bad")}
    results = score_pairs(load_unit_lm(args.exp_dir / f"epoch-{args.epochs}.pt"), pairs, units)
    (args.exp_dir / f"zero-shot-epoch-{args.epochs}.json").write_text(json.dumps({"results": results}, indent=1) + "\n")
    print(markdown_table(results))


if __name__ == "__main__":
    main()
