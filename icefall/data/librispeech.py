"""LibriSpeech training splits built from the per-part cut manifests (``prepare.sh`` stage 3).

Usage (from ``egs/librispeech/SSL``)::

    python -m icefall.data.librispeech --fbank-dir data/fbank [--seed 42] [--ft-hours 10]

Reads ``librispeech_cuts_<part>.jsonl.gz`` for the training parts present and writes

- ``librispeech_cuts_train-all-shuf.jsonl.gz``: every cut of the training parts (960 h on the
  full corpus), in a seeded random order. Pretraining streams it lazily, so the order on disk
  is the order the sampler's shuffle buffer sees: a pre-shuffle mixes clean and other speech.
- ``librispeech_cuts_train-<H>h.jsonl.gz`` (``--ft-hours H``, default 10): a fine-tuning subset
  of train-clean-100 with ``H / 100.6`` of its audio, so about H hours on the real part and
  the same fraction of a fixture. Cuts are taken in a seeded random order until the target
  duration is reached. (Libri-light's official 10 h set mixes clean and other speech; this
  subset is clean speech only, as the 100 h fine-tuning set is.)

Both are written line by line from the source JSON (no lhotse objects), gzip timestamp 0: the
same inputs and seed give the same bytes.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import random
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

PARTS = ("dev-clean", "dev-other", "test-clean", "test-other",
         "train-clean-100", "train-clean-360", "train-other-500")
TRAIN_PARTS = ("train-clean-100", "train-clean-360", "train-other-500")
TRAIN_CLEAN_100_HOURS = 100.6  # duration of the real train-clean-100 part
PREFIX = "librispeech"


def prepare_manifests(corpus_dir: Path, parts: Sequence[str], output_dir: Path, num_jobs: int = 1) -> None:
    """``prepare.sh`` stage 1: lhotse's ``prepare_librispeech``, after checking that every
    ``*.trans.txt`` of ``parts`` is UTF-8 (lhotse's own UnicodeDecodeError names no file; ours
    names the file and line)."""
    from lhotse.recipes import prepare_librispeech

    from icefall.utils import read_utf8

    for part in parts:
        for trans in sorted((Path(corpus_dir) / part).glob("*/*/*.trans.txt")):
            read_utf8(trans)
    prepare_librispeech(str(corpus_dir), dataset_parts=list(parts), output_dir=str(output_dir),
                        num_jobs=num_jobs)


def cuts_path(fbank_dir: Path, split: str) -> Path:
    return Path(fbank_dir) / f"{PREFIX}_cuts_{split}.jsonl.gz"


def read_lines(path: Path) -> List[str]:
    """The JSON lines of a ``.jsonl.gz`` manifest (one cut each), without newlines."""
    from icefall.utils import naming_file_on_decode_error

    with gzip.open(path, "rt", encoding="utf-8") as f, naming_file_on_decode_error(path):
        return [line.rstrip("\n") for line in f if line.strip()]


def write_lines(lines: Iterable[str], path: Path) -> None:
    """Writes JSON lines to ``path`` atomically; no name or time in the gzip header, so the
    same lines give the same bytes."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        for line in lines:
            f.write((line + "\n").encode("utf-8"))
    tmp.replace(path)


def combine_shuffled(inputs: Sequence[Path], out: Path, seed: int = 42) -> int:
    """Concatenates the cuts of ``inputs`` in a seeded random order; returns the cut count."""
    lines = [line for p in inputs for line in read_lines(p)]
    random.Random(seed).shuffle(lines)
    write_lines(lines, out)
    return len(lines)


def select_hours(lines: Sequence[str], target_seconds: float, seed: int = 42) -> List[str]:
    """The shortest prefix of a seeded random order of ``lines`` (cuts as JSON) whose durations
    sum to at least ``target_seconds`` (everything if the total is shorter), in that order."""
    order = list(lines)
    random.Random(seed).shuffle(order)
    out, total = [], 0.0
    for line in order:
        if total >= target_seconds:
            break
        out.append(line)
        total += json.loads(line)["duration"]
    return out


def make_splits(fbank_dir: Path, seed: int = 42, ft_hours: float = 10.0,
                parts: Optional[Sequence[str]] = None) -> None:
    """Writes train-all-shuf (the training parts present, or ``parts``) and train-<H>h."""
    fbank_dir = Path(fbank_dir)
    parts = [p for p in (parts or TRAIN_PARTS) if cuts_path(fbank_dir, p).is_file()]
    if not parts:
        raise FileNotFoundError(f"no training part in {fbank_dir}: run stages 1-2 first")
    n = combine_shuffled([cuts_path(fbank_dir, p) for p in parts],
                         cuts_path(fbank_dir, "train-all-shuf"), seed)
    logging.info(f"train-all-shuf: {n} cuts from {' '.join(parts)}")
    clean100 = cuts_path(fbank_dir, "train-clean-100")
    if clean100.is_file():
        lines = read_lines(clean100)
        total = sum(json.loads(line)["duration"] for line in lines)
        subset = select_hours(lines, total * ft_hours / TRAIN_CLEAN_100_HOURS, seed)
        write_lines(subset, cuts_path(fbank_dir, f"train-{ft_hours:g}h"))
        hours = sum(json.loads(line)["duration"] for line in subset) / 3600
        logging.info(f"train-{ft_hours:g}h: {len(subset)} of {len(lines)} cuts, {hours:.3f} h")
    else:
        logging.warning(f"{clean100} missing: no fine-tuning subset")


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fbank-dir", type=Path, default=Path("data/fbank"))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--ft-hours", type=float, default=10.0,
                   help="fine-tuning subset: this many hours of the real train-clean-100")
    p.add_argument("--parts", nargs="+", default=None, help="training parts to combine")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    make_splits(args.fbank_dir, args.seed, args.ft_hours, args.parts)


if __name__ == "__main__":
    main()
