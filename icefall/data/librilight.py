"""Libri-Light for SSL pretraining: long audiobook files cut into fixed-length segments, lazy
manifest pieces, k-means labels applied piece by piece, and Lhotse Shar shards.

``egs/librilight/SSL/prepare.sh`` drives it. Manifests and segments are made per subset;
every later step works on one piece (a ``jsonl.gz`` of ``--cuts-per-piece`` segments), so
pieces run as parallel jobs (``xargs -P`` there, array jobs on a cluster) and a finished piece
is never redone::

    python -m icefall.data.librilight manifests --corpus-dir download/LibriLight --subset small
    python -m icefall.data.librilight segment --subset small --segment-seconds 15
    python -m icefall.data.librilight fbank data/segments/librilight_cuts_small.000000.jsonl.gz
    python -m icefall.data.librilight fit-sample --out FILE --hours 100 PIECE ...
    python -m icefall.data.librilight shar --shar-dir DIR --fields recording=flac PIECE ...
    python -m icefall.data.librilight concat --out FILE PIECE ...

The corpus layout (https://github.com/facebookresearch/libri-light, data_preparation/README.md)
is ``<corpus>/<subset>/<speaker>/<book>/<file>.flac`` with a ``<file>.json`` next to each file
(``speaker``, ``book_meta``, ``snr``, ``voice_activity`` as [onset, offset] pairs in seconds).
:func:`write_librilight_tree` writes a small synthesized tree laid out the same way, for tests.

Segmenting rule (:func:`segment_recording`): a recording of N samples becomes windows of
``W = round(seconds * sr)`` samples starting at 0, W, 2W, ...; the last, shorter window (the
tail, N mod W samples) is kept if it is at least ``min_seconds`` long and dropped otherwise.
So a file has ``N // W`` segments, plus one if its tail is non-empty and at least
``round(min_seconds * sr)`` samples. Segment ids are
``<recording id>_<k:04d>`` with ``/`` of the recording id replaced by ``_`` (Shar stores one
tar member per id). Segments carry no supervisions (SSL needs none); the VAD supervisions stay
in ``data/manifests``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import soundfile as sf

from icefall.utils import read_utf8

SUBSETS = ("small", "medium", "large")
PREFIX = "librilight"


def cuts_path(directory: Path, split: str) -> Path:
    """``<directory>/librilight_cuts_<split>.jsonl.gz`` (the name ``icefall.ssl.labels`` and the
    training data module expect for ``--cuts-prefix librilight``)."""
    return Path(directory) / f"{PREFIX}_cuts_{split}.jsonl.gz"


def piece_paths(directory: Path, subset: str) -> List[Path]:
    """The pieces ``librilight_cuts_<subset>.<NNNNNN>.jsonl.gz`` of ``subset``, in order."""
    return sorted(Path(directory).glob(f"{PREFIX}_cuts_{subset}.[0-9]*.jsonl.gz"))


def split_name(path: Path) -> str:
    """``.../librilight_cuts_small.000003.jsonl.gz`` -> ``small.000003``."""
    name = Path(path).name
    if not (name.startswith(f"{PREFIX}_cuts_") and name.endswith(".jsonl.gz")):
        raise ValueError(f"{path}: not a {PREFIX}_cuts_<split>.jsonl.gz manifest")
    return name[len(f"{PREFIX}_cuts_"):-len(".jsonl.gz")]


# ----------------------------------------------------------------------------- fixture


def write_librilight_tree(root: Path, files: Optional[Dict[str, int]] = None,
                          num_speakers: int = 3, sentences_per_file: int = 16, seed: int = 0,
                          lang: str = "en", num_workers: int = 1) -> Path:
    """A fixture laid out like Libri-Light: ``root/LibriLight/<subset>/<speaker>/<book>/`` with
    ``<file>.flac`` (16 kHz, 16 bit) and ``<file>.json`` per file.

    ``files`` maps a subset name to its number of files (default ``{"small": 4}``), given to
    ``num_speakers`` speakers in turn; each speaker reads one book per subset. A file is
    ``sentences_per_file`` espeak-ng sentences (:mod:`icefall.data.corpus`) one after the other,
    about 3 s each. The JSON holds ``speaker``, ``book_meta``, ``snr`` (made up) and
    ``voice_activity``: one [onset, offset] pair (s) per sentence, from its first word's start
    to its last word's end. Deterministic in ``seed``. Returns the ``LibriLight`` directory.
    """
    from icefall.data.corpus import UttSpec, _synth_all, make_speakers
    from icefall.data.synth import SAMPLE_RATE

    files = {"small": 4} if files is None else files
    train_spk, _ = make_speakers(lang, seed)
    base = Path(root) / "LibriLight"
    base.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"librilight-{seed}")
    for k, (subset, n) in enumerate(files.items()):
        outputs, jobs = [], []
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            for f in range(n):
                s = f % num_speakers
                spk = train_spk[(k * num_speakers + s) % len(train_spk)]
                spk_num = 100 * (k + 1) + s
                book = 1000 * (k + 1) + s
                d = base / subset / str(spk_num) / f"book_{book}_librivox_64kb_mp3"
                stem = f"book{book}_{f // num_speakers + 1:02d}_reader_64kb"
                parts = []
                for j in range(sentences_per_file):
                    utt_id = f"{spk_num}-{book}-{f:03d}-{j:03d}"
                    parts.append(len(jobs))
                    jobs.append((UttSpec(id=utt_id, speaker=spk, seed=seed),
                                 str(Path(tmp) / f"{utt_id}.flac")))
                outputs.append((d / stem, str(spk_num), book, parts))
            results = _synth_all(jobs, num_workers)
            for stem, speaker, book, parts in outputs:
                audio, vad, offset = [], [], 0
                for i in parts:
                    samples, _ = sf.read(jobs[i][1], dtype="int16")
                    words = results[i].words
                    vad.append([round((offset / SAMPLE_RATE) + words[0][1], 2),
                                round((offset / SAMPLE_RATE) + words[-1][2], 2)])
                    audio.append(samples)
                    offset += len(samples)
                stem.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(stem) + ".flac", np.concatenate(audio), SAMPLE_RATE,
                         format="FLAC", subtype="PCM_16")
                meta = {"speaker": speaker,
                        "book_meta": {"id": str(book), "title": f"Fixture book {book}",
                                      "genre": ["*Non-fiction"], "Dramatic Readings": False,
                                      "meta_genre": "Literature"},
                        "snr": round(rng.uniform(5.0, 30.0), 3),
                        "voice_activity": vad}
                Path(str(stem) + ".json").write_text(json.dumps(meta, indent=1))
    return base


# ----------------------------------------------------------------------------- manifests


def write_manifests(corpus_dir: Path, subset: str, manifest_dir: Path,
                    num_jobs: int = 1) -> Dict[str, Path]:
    """Recording and supervision manifests of one subset, named and keyed as lhotse's
    ``prepare_librilight`` names them: ``librilight_{recordings,supervisions}_<subset>.jsonl.gz``,
    recording id ``<subset>/<speaker>/<book>/<file>``, one supervision ``<recording id>_<k>``
    per voice-activity interval of the JSON (clipped to the recording).

    (lhotse's ``prepare_librilight`` itself cannot be used here: it always processes all three
    subsets and fails when one is absent, as it is while only ``small`` is downloaded.)
    Headers are read by ``num_jobs`` threads; output is streamed, in sorted file order.
    """
    from concurrent.futures import ThreadPoolExecutor

    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.utils import add_durations

    from icefall.utils import atomic_write_path

    corpus_dir, manifest_dir = Path(corpus_dir), Path(manifest_dir)
    flacs = sorted((corpus_dir / subset).rglob("*.flac"))
    if not flacs:
        raise FileNotFoundError(f"{corpus_dir / subset}: no .flac files")

    def parse(path: Path):
        rec_id = path.relative_to(corpus_dir).with_suffix("").as_posix()
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: missing (each Libri-Light .flac has a .json)")
        meta = json.loads(read_utf8(meta_path))
        rec = Recording.from_file(path, recording_id=rec_id)
        sups = []
        for k, (b, e) in enumerate(meta["voice_activity"]):
            e = min(e, rec.duration)
            if e > b:
                sups.append(SupervisionSegment(
                    id=f"{rec_id}_{k}", recording_id=rec_id, start=b,
                    duration=add_durations(e, -b, sampling_rate=rec.sampling_rate), channel=0,
                    language="English", speaker=str(meta["speaker"])))
        return rec, sups

    manifest_dir.mkdir(parents=True, exist_ok=True)
    out = {kind: manifest_dir / f"{PREFIX}_{kind}_{subset}.jsonl.gz"
           for kind in ("recordings", "supervisions")}
    tmp = {kind: atomic_write_path(p) for kind, p in out.items()}
    with ThreadPoolExecutor(max(1, num_jobs)) as ex, \
            RecordingSet.open_writer(tmp["recordings"]) as wr, \
            SupervisionSet.open_writer(tmp["supervisions"]) as ws:
        for rec, sups in ex.map(parse, flacs):
            wr.write(rec)
            for s in sups:
                ws.write(s)
    for kind in out:
        os.replace(tmp[kind], out[kind])
    logging.info(f"{subset}: {len(flacs)} recordings -> {out['recordings']}")
    return out


# ----------------------------------------------------------------------------- segments


def segment_recording(recording, seconds: float, min_seconds: float) -> list:
    """Fixed-length windows of ``recording`` as MonoCuts (see the module docstring for the
    rule); ``seconds`` the window length, ``min_seconds`` the shortest tail kept."""
    from lhotse import MonoCut

    sr, n = recording.sampling_rate, recording.num_samples
    w, m = round(seconds * sr), round(min_seconds * sr)
    if w <= 0:
        raise ValueError(f"segment length {seconds} s is shorter than one sample")
    spans = [(s, w) for s in range(0, n - n % w, w)]
    tail = n % w
    if tail > 0 and tail >= m:
        spans.append((n - tail, tail))
    base = recording.id.replace("/", "_")
    return [MonoCut(id=f"{base}_{k:04d}", start=s / sr, duration=d / sr, channel=0,
                    recording=recording) for k, (s, d) in enumerate(spans)]


def write_segments(manifest_dir: Path, subset: str, out_dir: Path, seconds: float = 15.0,
                   min_seconds: float = 2.0, cuts_per_piece: int = 10000, seed: int = 42,
                   dev_files: int = 0) -> Dict[str, int]:
    """Cuts every recording of ``subset`` into segments and writes them as pieces of
    ``cuts_per_piece`` cuts: ``<out_dir>/librilight_cuts_<subset>.<NNNNNN>.jsonl.gz``.

    Recordings are taken in a seeded random order (so that each piece, and a lazy reader's
    shuffle buffer, mixes speakers and books; the segments of one file stay together). With
    ``dev_files`` > 0 the first that many recordings of that order go, whole, to
    ``librilight_cuts_dev.jsonl.gz`` instead (Libri-Light has no dev set; whole files keep
    their audio out of training). Pieces are written to a temporary directory and moved in
    when complete. Returns {"recordings", "segments", "pieces", "dev_segments"}.
    """
    from lhotse import CutSet, load_manifest
    from lhotse.utils import split_manifest_lazy

    out_dir = Path(out_dir)
    recs = sorted(load_manifest(Path(manifest_dir) / f"{PREFIX}_recordings_{subset}.jsonl.gz"),
                  key=lambda r: r.id)
    if dev_files >= len(recs):
        raise ValueError(f"{subset}: --dev-files {dev_files} leaves none of its {len(recs)} "
                         f"recordings for training")
    random.Random(seed).shuffle(recs)
    dev, train = recs[:dev_files], recs[dev_files:]
    counts = {"recordings": len(recs), "segments": 0, "pieces": 0, "dev_segments": 0}

    def segments() -> Iterator:
        for rec in train:
            for cut in segment_recording(rec, seconds, min_seconds):
                counts["segments"] += 1
                yield cut

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".tmp-{subset}-") as tmp:
        pieces = split_manifest_lazy(segments(), tmp, cuts_per_piece,
                                     prefix=f"{PREFIX}_cuts_{subset}", num_digits=6)
        counts["pieces"] = len(pieces)
        if dev:
            dev_cuts = [c for rec in dev for c in segment_recording(rec, seconds, min_seconds)]
            CutSet.from_cuts(dev_cuts).to_file(cuts_path(tmp, "dev"))
            counts["dev_segments"] = len(dev_cuts)
        for old in piece_paths(out_dir, subset):
            old.unlink()
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, out_dir / f.name)
    logging.info(f"{subset}: {counts}")
    return counts


# ----------------------------------------------------------------------------- per piece


def compute_fbank_piece(piece: Path, out_dir: Path) -> Path:
    """80-dim fbank (lilcom, ``icefall.data.features``' extractor) of the cuts of one piece:
    ``<out_dir>/librilight_cuts_<split>.jsonl.gz`` and ``librilight_feats_<split>/``. Skips a
    piece whose output exists; one thread."""
    import torch
    from lhotse import LilcomChunkyWriter, load_manifest_lazy

    from icefall.data.features import make_fbank_extractor
    from icefall.utils import atomic_write_path

    split = split_name(piece)
    out = cuts_path(out_dir, split)
    if out.is_file():
        logging.info(f"{out} exists: skipping")
        return out
    torch.set_num_threads(1)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    cuts = load_manifest_lazy(piece).compute_and_store_features(
        extractor=make_fbank_extractor(), storage_path=Path(out_dir) / f"{PREFIX}_feats_{split}",
        num_jobs=1, storage_type=LilcomChunkyWriter)
    tmp = atomic_write_path(out)
    cuts.to_file(tmp)
    os.replace(tmp, out)
    logging.info(f"wrote {out}")
    return out


def write_fit_sample(pieces: Sequence[Path], out: Path, hours: float, seed: int = 42,
                     pool_factor: float = 10.0) -> int:
    """A seeded random sample of segments holding at least ``hours`` of audio (all if there is
    less), to fit k-means on (``icefall.data.librispeech.select_hours``). It is drawn from the
    first pieces holding ``pool_factor`` times that much (pieces already list files in a
    random order), so memory stays bounded on the large subset. Returns the cut count."""
    from icefall.data.librispeech import read_lines, select_hours, write_lines

    lines, pool = [], 0.0
    for p in pieces:
        if pool >= pool_factor * hours * 3600:
            break
        for line in read_lines(p):
            lines.append(line)
            pool += json.loads(line)["duration"]
    sample = select_hours(lines, hours * 3600, seed)
    write_lines(sample, out)
    return len(sample)


def write_shar_piece(piece: Path, shar_dir: Path, fields: Dict[str, str],
                     cuts_per_piece: int, shard_size: int) -> List[Path]:
    """Lhotse Shar shards of one piece, numbered so that the pieces of a subset fill one
    directory without collisions: piece ``i`` writes shards ``i * cuts_per_piece / shard_size``
    onward (``cuts_per_piece`` must be a multiple of ``shard_size``). Written to a temporary
    directory, moved in when complete, and marked done (skipped next time); temporary
    directories and markers live in ``<shar_dir>.progress/``, since ``CutSet.from_shar``
    takes every file of ``shar_dir`` for a shard.
    ``fields`` e.g. {"recording": "flac"} or {"features": "lilcom"}. Read the directory back
    with ``CutSet.from_shar(in_dir=shar_dir)``."""
    from lhotse import load_manifest_lazy

    if cuts_per_piece % shard_size:
        raise ValueError(f"cuts per piece ({cuts_per_piece}) must be a multiple of the shard "
                         f"size ({shard_size}), so that pieces' shard numbers do not collide")
    split = split_name(piece)
    index = int(split.rsplit(".", 1)[1])
    shar_dir = Path(shar_dir)
    progress = shar_dir.with_name(shar_dir.name + ".progress")
    marker = progress / f"{split}.done"
    if marker.is_file():
        logging.info(f"{marker} exists: skipping")
        return []
    shar_dir.mkdir(parents=True, exist_ok=True)
    progress.mkdir(parents=True, exist_ok=True)
    cuts = load_manifest_lazy(piece)
    if len(cuts) > cuts_per_piece:
        raise ValueError(f"{piece}: {len(cuts)} cuts, more than --cuts-per-piece {cuts_per_piece}")
    moved = []
    with tempfile.TemporaryDirectory(dir=progress, prefix=f"tmp-{split}-") as tmp:
        cuts.to_shar(tmp, fields=fields, shard_size=shard_size,
                     shard_offset=index * cuts_per_piece // shard_size, warn_unused_fields=False)
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, shar_dir / f.name)
            moved.append(shar_dir / f.name)
    marker.touch()
    logging.info(f"{piece} -> {len(moved)} Shar files in {shar_dir}")
    return moved


def concat_manifests(inputs: Sequence[Path], out: Path) -> int:
    """The cuts of ``inputs`` one manifest after another into ``out`` (line by line, one input
    in memory at a time; atomic). Returns the cut count."""
    from icefall.data.librispeech import read_lines, write_lines

    count = [0]

    def lines() -> Iterable[str]:
        for p in inputs:
            for line in read_lines(p):
                count[0] += 1
                yield line

    write_lines(lines(), out)
    return count[0]


# ----------------------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("manifests", help="recording/supervision manifests of one subset")
    a.add_argument("--corpus-dir", type=Path, required=True, help="holds small/ medium/ large/")
    a.add_argument("--subset", required=True)
    a.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    a.add_argument("--num-jobs", type=int, default=4, help="threads reading audio headers")

    a = sub.add_parser("segment", help="fixed-length segments of a subset, in pieces")
    a.add_argument("--subset", required=True)
    a.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    a.add_argument("--out-dir", type=Path, default=Path("data/segments"))
    a.add_argument("--segment-seconds", type=float, default=15.0)
    a.add_argument("--min-segment-seconds", type=float, default=2.0,
                   help="a file's last, shorter segment is kept if at least this long")
    a.add_argument("--cuts-per-piece", type=int, default=10000)
    a.add_argument("--dev-files", type=int, default=0,
                   help="whole files held out into librilight_cuts_dev.jsonl.gz")
    a.add_argument("--seed", type=int, default=42)

    a = sub.add_parser("fbank", help="fbank of pieces (each skipped when done)")
    a.add_argument("pieces", type=Path, nargs="+")
    a.add_argument("--out-dir", type=Path, default=Path("data/fbank"))

    a = sub.add_parser("fit-sample", help="random segments of some hours, to fit k-means on")
    a.add_argument("pieces", type=Path, nargs="+")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--hours", type=float, default=100.0)
    a.add_argument("--seed", type=int, default=42)

    a = sub.add_parser("shar", help="Lhotse Shar shards of pieces (each skipped when done)")
    a.add_argument("pieces", type=Path, nargs="+")
    a.add_argument("--shar-dir", type=Path, required=True)
    a.add_argument("--fields", nargs="+", default=["recording=flac"],
                   help="field=format pairs: recording=flac, features=lilcom")
    a.add_argument("--cuts-per-piece", type=int, default=10000)
    a.add_argument("--shard-size", type=int, default=1000)

    a = sub.add_parser("concat", help="manifests one after another into one")
    a.add_argument("pieces", type=Path, nargs="+")
    a.add_argument("--out", type=Path, required=True)

    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.command == "manifests":
        write_manifests(args.corpus_dir, args.subset, args.manifest_dir, args.num_jobs)
    elif args.command == "segment":
        write_segments(args.manifest_dir, args.subset, args.out_dir, args.segment_seconds,
                       args.min_segment_seconds, args.cuts_per_piece, args.seed, args.dev_files)
    elif args.command == "fbank":
        for piece in args.pieces:
            compute_fbank_piece(piece, args.out_dir)
    elif args.command == "fit-sample":
        n = write_fit_sample(args.pieces, args.out, args.hours, args.seed)
        logging.info(f"{args.out}: {n} cuts")
    elif args.command == "shar":
        fields = dict(f.split("=", 1) for f in args.fields)
        for piece in args.pieces:
            write_shar_piece(piece, args.shar_dir, fields, args.cuts_per_piece, args.shard_size)
    elif args.command == "concat":
        n = concat_manifests(args.pieces, args.out)
        logging.info(f"{args.out}: {n} cuts")


if __name__ == "__main__":
    main()
