"""LibriSpeech's training splits (``prepare.sh`` stage 3) and Libri-light's limited-resource
fine-tuning sets (stage 1).

Usage (from ``egs/librispeech/SSL``)::

    python -m icefall.data.librispeech splits --fbank-dir data/fbank [--seed 42]
    python -m icefall.data.librispeech finetuning-manifests \
        --finetuning-dir download/librispeech_finetuning --manifest-dir data/manifests

``splits`` reads ``librispeech_cuts_<part>.jsonl.gz`` for the training parts present and writes
``librispeech_cuts_train-all-shuf.jsonl.gz``: every cut of the training parts (960 h on the full
corpus), in a seeded random order. Pretraining streams it lazily, so the order on disk is the
order the sampler's shuffle buffer sees: a pre-shuffle mixes clean and other speech. It is
written line by line from the source JSON (no lhotse objects), gzip timestamp 0: the same
inputs and seed give the same bytes.

``finetuning-manifests`` reads Libri-light's ``librispeech_finetuning`` archive
(``1h/{0..5}/{clean,other}`` and ``9h/{clean,other}``, each a LibriSpeech-style
``<speaker>/<chapter>/`` tree with ``.flac`` files and a ``.trans.txt``) and writes the lhotse
manifests ``librispeech_{recordings,supervisions}_<set>.jsonl.gz`` of the three sets the papers
fine-tune on (:data:`FINETUNING_SETS`): ``train-10min`` (``1h/0``), ``train-1h`` (all of ``1h``)
and ``train-10h`` (``1h`` + ``9h``). The 100 h set is ``train-clean-100``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import random
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

PARTS = ("dev-clean", "dev-other", "test-clean", "test-other",
         "train-clean-100", "train-clean-360", "train-other-500")
TRAIN_PARTS = ("train-clean-100", "train-clean-360", "train-other-500")
PREFIX = "librispeech"
# Libri-light's limited-resource sets: the librispeech_finetuning directories that make each.
_ONE_HOUR = tuple(f"1h/{k}/{kind}" for k in range(6) for kind in ("clean", "other"))
FINETUNING_SETS: Dict[str, Sequence[str]] = {
    "train-10min": ("1h/0/clean", "1h/0/other"),
    "train-1h": _ONE_HOUR,
    "train-10h": _ONE_HOUR + ("9h/clean", "9h/other"),
}


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


def make_splits(fbank_dir: Path, seed: int = 42, parts: Optional[Sequence[str]] = None) -> None:
    """Writes train-all-shuf from the training parts present (or ``parts``)."""
    fbank_dir = Path(fbank_dir)
    parts = [p for p in (parts or TRAIN_PARTS) if cuts_path(fbank_dir, p).is_file()]
    if not parts:
        raise FileNotFoundError(f"no training part in {fbank_dir}: run stages 1-2 first")
    n = combine_shuffled([cuts_path(fbank_dir, p) for p in parts],
                         cuts_path(fbank_dir, "train-all-shuf"), seed)
    logging.info(f"train-all-shuf: {n} cuts from {' '.join(parts)}")


def read_transcripts(directory: Path) -> Dict[str, str]:
    """{utterance id: text} of every ``*.trans.txt`` below ``directory``."""
    out = {}
    for trans in sorted(Path(directory).rglob("*.trans.txt")):
        for num, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            if not text:
                raise ValueError(f"{trans}:{num}: expected '<utterance-id> <TEXT>', got {line!r}")
            out[utt] = text
    return out


def finetuning_set_items(finetuning_dir: Path, name: str) -> List[tuple]:
    """(utterance id, audio path, text, speaker) of Libri-light set ``name``, sorted by id."""
    items = []
    for sub in FINETUNING_SETS[name]:
        d = Path(finetuning_dir) / sub
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: missing; {finetuning_dir} should hold Libri-light's "
                                    "librispeech_finetuning archive (1h/{0..5}/{clean,other}, 9h/{clean,other})")
        texts = read_transcripts(d)
        audio = {f.stem: f for f in d.rglob("*.flac")}
        if set(texts) != set(audio):
            missing = sorted(set(texts) ^ set(audio))[:5]
            raise ValueError(f"{d}: transcripts and .flac files differ (e.g. {missing})")
        items += [(utt, audio[utt], texts[utt], utt.split("-")[0]) for utt in texts]
    return sorted(items)


def prepare_finetuning_manifests(finetuning_dir: Path, manifest_dir: Path) -> Dict[str, int]:
    """lhotse recordings and supervisions of each Libri-light set; returns {set: utterances}.

    Ids, text and fields as lhotse's LibriSpeech recipe writes them, so that the sets go through
    the same fbank and training code as the LibriSpeech parts.
    """
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    manifest_dir = Path(manifest_dir)
    manifest_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in FINETUNING_SETS:
        items = finetuning_set_items(finetuning_dir, name)
        recs = [Recording.from_file(path, recording_id=utt) for utt, path, _, _ in items]
        sups = [SupervisionSegment(id=utt, recording_id=utt, start=0.0, duration=rec.duration, channel=0,
                                   text=text, language="English", speaker=spk)
                for (utt, _, text, spk), rec in zip(items, recs)]
        for kind, manifest in (("recordings", RecordingSet.from_recordings(recs)),
                               ("supervisions", SupervisionSet.from_segments(sups))):
            out = manifest_dir / f"{PREFIX}_{kind}_{name}.jsonl.gz"
            tmp = out.with_name(".tmp." + out.name)
            manifest.to_file(tmp)
            tmp.replace(out)  # atomic
        hours = sum(r.duration for r in recs) / 3600
        logging.info(f"{name}: {len(items)} utterances, {hours:.3f} h")
        counts[name] = len(items)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("splits", help="train-all-shuf from the training parts' cuts")
    s.add_argument("--fbank-dir", type=Path, default=Path("data/fbank"))
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--parts", nargs="+", default=None, help="training parts to combine")
    f = sub.add_parser("finetuning-manifests", help="manifests of Libri-light's 10 min / 1 h / 10 h sets")
    f.add_argument("--finetuning-dir", type=Path, required=True, help="the extracted librispeech_finetuning/")
    f.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.command == "splits":
        make_splits(args.fbank_dir, args.seed, args.parts)
    else:
        prepare_finetuning_manifests(args.finetuning_dir, args.manifest_dir)


if __name__ == "__main__":
    main()
