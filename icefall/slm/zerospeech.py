"""The real setting's zero-shot data: ZeroSpeech 2021 sWUGGY (``lexical``) and sBLIMP
(``syntactic``) as benchmark pairs of this package, so that the mini pipeline scores them.

    python -m icefall.slm.zerospeech --root /data/zerospeech2021 --task lexical --kind dev \\
        --out-dir data/zr2021-lexical-dev

The downloaded dataset keeps each task as ``<root>/<task>/<kind>/*.wav`` with
``<root>/<task>/<kind>/gold.csv`` (one row per file: ``filename``, a pair ``id``, ``correct`` =
1 for the real word / grammatical sentence and 0 for its foil, and more columns such as
``voice``, ``word``, ``type``/``subtype``). Rows are grouped by (``id``, ``voice`` when present);
a group must hold one correct row and at least one foil, and each foil makes one pair.

Writes ``pairs.jsonl`` (:class:`icefall.slm.benchmarks.Pair`; task, phenomenon from ``type``
when given, texts from ``word`` when given) and ``<prefix>_{recordings,supervisions}_bench``
manifests whose ids are the member ids, so that ``icefall.data.features``, the unit extractors
and ``icefall.slm.evaluate`` run on it unchanged (docs/slm.md). With ``--scores`` (the
``--member-scores`` file of ``icefall.slm.evaluate``) it writes instead a ZeroSpeech submission
file ``--submission`` (``<file> <log-probability>`` per line) for the official evaluator.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Dict, List, Tuple

from icefall.slm.benchmarks import MEMBERS, SPLIT, Pair


def read_gold(path: Path, task: str) -> Tuple[List[Pair], Dict[str, str]]:
    """Pairs from a ZeroSpeech ``gold.csv`` and {member id: wav file stem}."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for col in ("filename", "id", "correct"):
        if rows and col not in rows[0]:
            raise ValueError(f"{path}: no {col!r} column (columns: {sorted(rows[0])})")
    groups: Dict[Tuple[str, str], List[dict]] = {}
    for r in rows:
        groups.setdefault((r["id"], r.get("voice", "")), []).append(r)
    pairs, files = [], {}
    for (pid, voice), g in groups.items():
        good = [r for r in g if r["correct"].strip() == "1"]
        bad = [r for r in g if r["correct"].strip() == "0"]
        if len(good) != 1 or not bad:
            raise ValueError(f"{path}: pair id {pid!r} voice {voice!r} has {len(good)} correct rows and {len(bad)} foils")
        for k, b in enumerate(bad):
            p = Pair(id="-".join(x for x in (task, pid, voice, str(k)) if x), task=task,
                     phenomenon=good[0].get("type") or good[0].get("subtype") or task, speaker=voice or "unknown",
                     good=good[0].get("word", good[0]["filename"]), bad=b.get("word", b["filename"]))
            pairs.append(p)
            files[p.member_id("good")], files[p.member_id("bad")] = good[0]["filename"], b["filename"]
    return pairs, files


def prepare(root: Path, task: str, kind: str, out_dir: Path, prefix: str = "mini") -> Path:
    """``pairs.jsonl`` and the ``bench`` manifests of one ZeroSpeech task set; returns pairs.jsonl."""
    from lhotse import Recording, SupervisionSegment

    from icefall.data.corpus import _write_jsonl_gz, manifest_paths
    from icefall.utils import atomic_write_path

    base = Path(root) / task / kind
    pairs, files = read_gold(base / "gold.csv", task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recs, sups = [], []
    for p in pairs:
        for m in MEMBERS:
            i = p.member_id(m)
            wav = base / f"{Path(files[i]).stem}.wav"
            if not wav.is_file():
                raise FileNotFoundError(f"{base / 'gold.csv'}: {wav} does not exist")
            rec = Recording.from_file(wav, recording_id=i)
            recs.append(rec.to_dict())
            sups.append(SupervisionSegment(id=i, recording_id=i, start=0.0, duration=rec.duration,
                                           channel=0, text=p.good if m == "good" else p.bad, speaker=p.speaker).to_dict())
    paths = manifest_paths(out_dir, SPLIT, prefix)
    _write_jsonl_gz(recs, paths["recordings"])
    _write_jsonl_gz(sups, paths["supervisions"])
    (out_dir / "files.json").write_text(json.dumps(files) + "\n")
    pairs_path = out_dir / "pairs.jsonl"
    tmp = atomic_write_path(pairs_path)
    tmp.write_text("".join(json.dumps(p.__dict__) + "\n" for p in pairs), encoding="utf-8")
    tmp.replace(pairs_path)
    logging.info(f"{len(pairs)} {task} pairs of {base} -> {out_dir}")
    return pairs_path


def write_submission(member_scores: Dict[str, float], files: Dict[str, str], out: Path) -> None:
    """``<file stem> <score>`` lines, one per distinct file (the official evaluator's input)."""
    from icefall.utils import atomic_write_path

    by_file = {}
    for member, score in member_scores.items():
        by_file[Path(files[member]).stem] = score
    tmp = atomic_write_path(out)
    tmp.write_text("".join(f"{f} {s:.6f}\n" for f, s in sorted(by_file.items())))
    tmp.replace(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="the downloaded zerospeech2021 dataset")
    p.add_argument("--task", choices=["lexical", "syntactic"], required=True)
    p.add_argument("--kind", default="dev", help="dev or test")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--prefix", default="mini", help="manifest name prefix")
    p.add_argument("--scores", type=Path, default=None, help="member scores: write --submission from them")
    p.add_argument("--submission", type=Path, default=None, help="e.g. submission/lexical/dev.txt")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.scores is None:
        prepare(args.root, args.task, args.kind, args.out_dir, args.prefix)
        return
    if args.submission is None:
        p.error("--scores needs --submission")
    scores = {k: float(v) for k, v in (ln.split() for ln in args.scores.read_text().splitlines() if ln.strip())}
    files = json.loads((args.out_dir / "files.json").read_text())
    args.submission.parent.mkdir(parents=True, exist_ok=True)
    write_submission(scores, files, args.submission)


if __name__ == "__main__":
    main()
