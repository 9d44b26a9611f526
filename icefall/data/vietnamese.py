"""Vietnamese corpora for the VietASR-style recipe (``egs/vietnamese/SSL/prepare.sh``).

Text normalisation, readers of the three corpora as they are laid out on disk after download,
lhotse manifest writing, the labeled fine-tuning subset, and fixture trees (synthesized with the
espeak Vietnamese voices) laid out like the real corpora so that every stage is tested offline.

Usage (from ``egs/vietnamese/SSL``)::

    python -m icefall.data.vietnamese manifests --manifest-dir data/manifests \\
        [--gigaspeech2 download/gigaspeech2/data/vi] [--commonvoice download/cv-corpus-17.0/vi] \\
        [--fleurs download/fleurs/data/vi_vn]
    python -m icefall.data.vietnamese labeled --fbank-dir data/fbank \\
        --manifest-dir data/manifests [--hours 50] [--seed 42]

Layouts read (see docs/vietnamese.md for the sources):

- GigaSpeech 2 (``speechcolab/gigaspeech2``, ``data/vi/``): ``train_raw.tsv``,
  ``train_refined.tsv``, ``dev.tsv``, ``test.tsv`` with ``<id>\\t<text>`` lines, no header; audio
  ``<id>.wav`` somewhere below ``train/``, ``dev/``, ``test/`` (the ``train/<n>.tar.gz``,
  ``dev.tar.gz`` and ``test.tar.gz`` archives extracted in place; ``prepare.sh`` stage 0 does it).
- Common Voice (``cv-corpus-<version>/vi/``): ``{train,dev,test,validated}.tsv`` with a header
  (``client_id path sentence ...``), audio ``clips/<path>`` (MP3, usually 48 kHz).
- FLEURS (``google/fleurs``, ``data/vi_vn/``): ``{train,dev,test}.tsv`` without header, columns
  id, file name, raw transcription, transcription, characters, number of samples, gender;
  audio ``audio/<split>/<file name>`` (``audio/<split>.tar.gz`` extracted in ``audio/``).

Manifests: ``<manifest-dir>/vietnamese_{recordings,supervisions}_<split>.jsonl.gz`` for the splits
``gigaspeech2-train`` (every training recording, with its raw transcript: the unlabeled pool),
``gigaspeech2-dev``, ``gigaspeech2-test``, ``commonvoice-{dev,test}``, ``fleurs-{dev,test}``, plus
``vietnamese_supervisions_gigaspeech2-train-refined`` (refined transcripts, no recordings: the
same audio). Supervision texts are normalised (:func:`normalize_text`); the original is kept in
``supervision.custom["raw_text"]``. Audio that is not 16 kHz is resampled on loading.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import random
import tarfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from icefall.utils import naming_file_on_decode_error, read_utf8

PREFIX = "vietnamese"
SAMPLE_RATE = 16000

# ----------------------------------------------------------------------------- normalisation
_BASE_VOWELS = "aăâeêioôơuưy"
_TONE_MARKS = ("", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323")  # huyền sắc hỏi ngã nặng
_CONSONANTS = "bcdđghklmnpqrstvx"
_LOANWORD_LETTERS = "fjwz"  # not in the 29-letter alphabet, but common in names and loanwords

#: Lower-case letters kept by :func:`normalize_text` (NFC): the 12 vowels with each of the six
#: tones (72), the 17 consonants, and f j w z.
VI_LETTERS = frozenset(
    [unicodedata.normalize("NFC", v + t) for v in _BASE_VOWELS for t in _TONE_MARKS]
    + list(_CONSONANTS) + list(_LOANWORD_LETTERS))


def _is_punct_or_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def normalize_text(text: str, keep_digits: bool = True) -> str:
    """Transcript normalisation for training and scoring.

    NFC, lower case, punctuation and symbols (Unicode categories P*, S*) replaced by spaces,
    then every word holding a character outside the Vietnamese alphabet (:data:`VI_LETTERS`,
    and the digits 0-9 unless ``keep_digits`` is false) is dropped, and spaces are collapsed.
    Dropping whole words (rather than characters) keeps "müller" or "北京" from turning into
    a fake Vietnamese word.
    """
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).lower())
    text = "".join(" " if _is_punct_or_symbol(c) else c for c in text)
    ok = VI_LETTERS | (frozenset("0123456789") if keep_digits else frozenset())
    return " ".join(w for w in text.split() if all(c in ok for c in w))


# ----------------------------------------------------------------------------- readers
@dataclass
class Utt:
    """One utterance as a corpus lists it."""

    id: str
    audio: Optional[Path]  # None: the listed audio file is missing
    text: str  # as in the corpus (raw)
    speaker: Optional[str] = None
    gender: Optional[str] = None


def _wav_index(d: Path) -> Dict[str, Path]:
    """{file stem: path} of every .wav below ``d`` (archives may nest a folder or two)."""
    return {p.stem: p for p in sorted(Path(d).rglob("*.wav"))} if Path(d).is_dir() else {}


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is the corpus downloaded and extracted "
                                f"there? (docs/vietnamese.md lists the expected layout)")
    return path


def read_gigaspeech2(lang_dir: Path, part: str) -> List[Utt]:
    """``part``: train_raw, train_refined, dev or test (``<lang_dir>/<part>.tsv``)."""
    lang_dir = Path(lang_dir)
    tsv = _require(lang_dir / f"{part}.tsv")
    index = _wav_index(lang_dir / part.split("_")[0])
    out = []
    for n, line in enumerate(read_utf8(tsv).splitlines()):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(f"{tsv}:{n + 1}: expected '<id>\\t<text>', got {line!r}")
        uid, text = line.split("\t", 1)
        out.append(Utt(uid, index.get(uid), text))
    return out


def read_commonvoice(lang_dir: Path, part: str) -> List[Utt]:
    """``part``: train, dev, test, validated, ... (``<lang_dir>/<part>.tsv``, header row)."""
    lang_dir = Path(lang_dir)
    tsv = _require(lang_dir / f"{part}.tsv")
    out = []
    with open(tsv, encoding="utf-8", newline="") as f, naming_file_on_decode_error(tsv):
        # Common Voice sentences hold unbalanced quotes: no quoting.
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            missing = {"client_id", "path", "sentence"} - set(row)
            if missing:
                raise ValueError(f"{tsv}: no column {sorted(missing)} in the header")
            audio = lang_dir / "clips" / row["path"]
            out.append(Utt(Path(row["path"]).stem, audio if audio.is_file() else None,
                           row["sentence"], row["client_id"], row.get("gender") or None))
    return out


def read_fleurs(lang_dir: Path, part: str) -> List[Utt]:
    """``part``: train, dev or test. Uses the "transcription" column (FLEURS' own normalised
    text); the recording id is the file name (FLEURS ids repeat: one sentence, several
    readers)."""
    lang_dir = Path(lang_dir)
    tsv = _require(lang_dir / f"{part}.tsv")
    index = _wav_index(lang_dir / "audio" / part)
    out = []
    for n, line in enumerate(read_utf8(tsv).splitlines()):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 7:
            raise ValueError(f"{tsv}:{n + 1}: expected 7 tab-separated columns, got {len(cols)}")
        stem = Path(cols[1]).stem
        out.append(Utt(stem, index.get(stem), cols[3], None, cols[6] or None))
    return out


# ----------------------------------------------------------------------------- manifests
def manifest_path(manifest_dir: Path, kind: str, split: str) -> Path:
    return Path(manifest_dir) / f"{PREFIX}_{kind}_{split}.jsonl.gz"


def _write_jsonl_gz(items: Iterable[dict], path: Path) -> None:
    from icefall.data.corpus import _write_jsonl_gz as write

    write(items, Path(path))


def _recording(args: Tuple[Path, str]):
    """A 16 kHz lhotse Recording of one file (resampled on loading if it is not 16 kHz)."""
    from lhotse import Recording

    rec = Recording.from_file(args[0], recording_id=args[1])
    return rec if rec.sampling_rate == SAMPLE_RATE else rec.resample(SAMPLE_RATE)


def write_manifests(utts: Sequence[Utt], manifest_dir: Path, split: str, lang: str = "vi",
                    keep_empty: bool = False, with_recordings: bool = True,
                    num_jobs: int = 1) -> Dict[str, int]:
    """Recordings (read from the audio headers) and normalised supervisions of ``utts``.

    Utterances without audio are skipped, and those whose normalised text is empty unless
    ``keep_empty`` (the unlabeled pool keeps them). ``with_recordings`` False writes only the
    supervisions (the refined transcripts of audio that another split already lists).
    ``num_jobs`` processes read the audio headers. Returns counts {"utterances", "no_audio",
    "empty_text"}.
    """
    from concurrent.futures import ProcessPoolExecutor

    from lhotse import SupervisionSegment

    stats = {"utterances": 0, "no_audio": 0, "empty_text": 0}
    todo = []
    for u in utts:
        if u.audio is None:
            stats["no_audio"] += 1
            continue
        text = normalize_text(u.text)
        if not text and not keep_empty:
            stats["empty_text"] += 1
            continue
        todo.append((u, text))
    jobs = [(u.audio, u.id) for u, _ in todo]
    if num_jobs > 1 and len(jobs) > num_jobs:
        with ProcessPoolExecutor(num_jobs) as ex:
            rec_objs = list(ex.map(_recording, jobs, chunksize=max(1, min(256, len(jobs) // num_jobs))))
    else:
        rec_objs = [_recording(j) for j in jobs]
    recs, sups = [], []
    for (u, text), rec in zip(todo, rec_objs):
        sups.append(SupervisionSegment(
            id=u.id, recording_id=u.id, start=0.0, duration=rec.duration, channel=0,
            text=text, language=lang, speaker=u.speaker, gender=u.gender,
            custom={"raw_text": u.text}).to_dict())
        recs.append(rec.to_dict())
    stats["utterances"] = len(recs)
    Path(manifest_dir).mkdir(parents=True, exist_ok=True)
    if with_recordings:
        _write_jsonl_gz(recs, manifest_path(manifest_dir, "recordings", split))
    _write_jsonl_gz(sups, manifest_path(manifest_dir, "supervisions", split))
    hours = sum(r["duration"] for r in recs) / 3600
    logging.info(f"{split}: {stats['utterances']} utterances, {hours:.3f} h "
                 f"({stats['no_audio']} without audio, {stats['empty_text']} empty after normalisation)")
    return stats


def prepare_gigaspeech2(lang_dir: Path, manifest_dir: Path, num_jobs: int = 1
                        ) -> Dict[str, Dict[str, int]]:
    """gigaspeech2-{train,dev,test} manifests and the refined training supervisions."""
    out = {"gigaspeech2-train": write_manifests(
        read_gigaspeech2(lang_dir, "train_raw"), manifest_dir, "gigaspeech2-train",
        keep_empty=True, num_jobs=num_jobs)}
    for part in ("dev", "test"):
        out[f"gigaspeech2-{part}"] = write_manifests(
            read_gigaspeech2(lang_dir, part), manifest_dir, f"gigaspeech2-{part}", num_jobs=num_jobs)
    out["gigaspeech2-train-refined"] = write_manifests(
        read_gigaspeech2(lang_dir, "train_refined"), manifest_dir, "gigaspeech2-train-refined",
        with_recordings=False, num_jobs=num_jobs)
    return out


def prepare_test_sets(name: str, lang_dir: Path, manifest_dir: Path,
                      parts: Sequence[str] = ("dev", "test"), num_jobs: int = 1
                      ) -> Dict[str, Dict[str, int]]:
    """Common Voice (``name`` "commonvoice") or FLEURS ("fleurs") evaluation splits."""
    reader = {"commonvoice": read_commonvoice, "fleurs": read_fleurs}[name]
    return {f"{name}-{p}": write_manifests(reader(lang_dir, p), manifest_dir, f"{name}-{p}",
                                           num_jobs=num_jobs)
            for p in parts}


def make_labeled_subset(fbank_dir: Path, manifest_dir: Path, hours: float = 50.0,
                        seed: int = 42) -> int:
    """``train-<H>h``: a seeded subset of about ``hours`` of the GigaSpeech 2 training cuts that
    have a refined transcript, the refined (normalised) text replacing the raw one.

    Writes ``<fbank_dir>/vietnamese_cuts_train-<H>h.jsonl.gz`` (pointing at the training fbank:
    no second copy) and ``<manifest_dir>/vietnamese_supervisions_train-<H>h.jsonl.gz`` (for the
    tokenizers). Returns the number of cuts.
    """
    from icefall.data.librispeech import read_lines, select_hours, write_lines

    refined = {}
    refined_path = manifest_path(manifest_dir, "supervisions", "gigaspeech2-train-refined")
    with gzip.open(refined_path, "rt", encoding="utf-8") as f, naming_file_on_decode_error(refined_path):
        for line in f:
            s = json.loads(line)
            refined[s["id"]] = s
    src = Path(fbank_dir) / f"{PREFIX}_cuts_gigaspeech2-train.jsonl.gz"
    lines = [line for line in read_lines(src) if json.loads(line)["id"] in refined]
    if not lines:
        raise ValueError(f"no cut of {src} has a refined transcript")
    subset = select_hours(lines, hours * 3600, seed)
    cuts, sups = [], []
    for line in subset:
        cut = json.loads(line)
        sup = refined[cut["id"]]
        cut["supervisions"][0].update(text=sup["text"], custom=sup.get("custom"))
        cuts.append(json.dumps(cut, ensure_ascii=False))
        sups.append(dict(cut["supervisions"][0]))
    split = f"train-{hours:g}h"
    write_lines(cuts, Path(fbank_dir) / f"{PREFIX}_cuts_{split}.jsonl.gz")
    _write_jsonl_gz(sups, manifest_path(manifest_dir, "supervisions", split))
    total = sum(json.loads(x)["duration"] for x in subset) / 3600
    logging.info(f"{split}: {len(subset)} of {len(lines)} refined cuts, {total:.3f} h")
    return len(subset)


# ----------------------------------------------------------------------------- fixtures
def _dirty(text: str, rng: random.Random, nfd: bool = False) -> str:
    """A raw-looking transcript whose normalisation is ``text``: capitalised, punctuated,
    optionally decomposed (NFD), with a word in a foreign script."""
    words = text.split()
    words[0] = words[0][:1].upper() + words[0][1:]
    if len(words) > 2:
        words[1] += rng.choice([",", ";", ":"])
    out = " ".join(words) + rng.choice([".", "!", "?", "..."])
    if rng.random() < 0.5:
        out = "“" + out + "” 北京"  # quotes, and a word no Vietnamese reader says
    return unicodedata.normalize("NFD", out) if nfd else out


def _synthesize(ids: Sequence[str], paths: Sequence[Path], seed: int, num_workers: int) -> List[str]:
    """Vietnamese utterances ``ids`` written (16 kHz, int16) to the FLAC ``paths`` by the mini
    corpus synthesizer; returns their clean texts."""
    from icefall.data.corpus import UttSpec, _synth_all, make_speakers

    train_spk, test_spk = make_speakers("vi", seed)
    speakers = train_spk + test_spk
    jobs = [(UttSpec(id=u, speaker=speakers[k % len(speakers)], seed=seed, max_words=6), str(p))
            for k, (u, p) in enumerate(zip(ids, paths))]
    return [r.text for r in _synth_all(jobs, num_workers)]


def _convert(flac: Path, dst: Path, sample_rate: int = SAMPLE_RATE) -> None:
    """Re-encode ``flac`` (16 kHz) as ``dst`` (format from its suffix) at ``sample_rate``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    audio, sr = sf.read(str(flac), dtype="float32")
    if sample_rate != sr:
        audio = resample_poly(audio, sample_rate, sr).astype(np.float32)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == ".mp3":
        sf.write(str(dst), audio, sample_rate, format="MP3", subtype="MPEG_LAYER_III")
    else:
        sf.write(str(dst), audio, sample_rate, subtype="PCM_16")
    flac.unlink()


def _tar_dir(src: Path, archive: Path, arcname: str) -> None:
    """Pack ``src`` as ``arcname/...`` into ``archive`` (gzip) and remove ``src``."""
    import shutil

    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    shutil.rmtree(src)


def _speak(root: Path, named: Dict[str, Path], seed: int, num_workers: int) -> Dict[str, str]:
    """Synthesizes utterance id -> final path (wav/mp3); returns id -> clean text."""
    tmp = {u: root / ".synth" / f"{u}.flac" for u in named}
    texts = _synthesize(list(tmp), list(tmp.values()), seed, num_workers)
    for u, dst in named.items():
        _convert(tmp[u], dst, 48000 if dst.suffix == ".mp3" else SAMPLE_RATE)
    (root / ".synth").rmdir()
    return dict(zip(tmp, texts))


def write_gigaspeech2_tree(root: Path, counts: Dict[str, int], seed: int = 0,
                           num_refined: Optional[int] = None, num_workers: int = 1
                           ) -> Tuple[Path, Dict[str, str]]:
    """A fixture like GigaSpeech 2 Vietnamese as downloaded: ``root/data/vi/`` with
    ``train/<n>.tar.gz`` (audio ``<n>/<m>/<n>-<m>-<k>.wav``), ``dev.tar.gz``, ``test.tar.gz``
    (``<part>/<n>/<m>/<n>-<m>-<k>.wav``)
    and the four tsv files. ``counts``: {"train": N, "dev": N, "test": N}. ``train_raw.tsv``
    lists every training utterance with a raw-looking transcript (plus a filler word the
    synthesizer did not say, as automatic transcripts have); ``train_refined.tsv`` lists the
    first ``num_refined`` (default: two thirds) with the clean one. Returns ``root/data/vi``
    and {utterance id: the clean text that was spoken}.
    """
    rng = random.Random(f"gigaspeech2-{seed}")
    lang = Path(root) / "data" / "vi"
    named: Dict[str, Dict[str, Path]] = {}
    for part, n in counts.items():
        named[part] = {}
        for k in range(n):
            # ids are unique across parts: the first number stands for the source archive
            a, b = (k % 2, k // 4) if part == "train" else (10 + len(named), k // 3)
            uid = f"{a}-{b}-{k}"
            named[part][uid] = lang / part / str(a) / str(b) / f"{uid}.wav"
    texts = _speak(lang, {u: p for d in named.values() for u, p in d.items()}, seed, num_workers)
    for part, utts in named.items():
        ids = list(utts)
        if part == "train":
            raw = [f"{_dirty(texts[u], rng)} ờ" for u in ids]
            refined = ids[: num_refined if num_refined is not None else (2 * len(ids)) // 3]
            (lang / "train_raw.tsv").write_text("".join(f"{u}\t{t}\n" for u, t in zip(ids, raw)),
                                                encoding="utf-8")
            (lang / "train_refined.tsv").write_text(
                "".join(f"{u}\t{texts[u][:1].upper() + texts[u][1:]}\n" for u in refined),
                encoding="utf-8")
            for a in sorted({u.split("-")[0] for u in ids}):
                _tar_dir(lang / "train" / a, lang / "train" / f"{a}.tar.gz", a)
        else:
            (lang / f"{part}.tsv").write_text(
                "".join(f"{u}\t{_dirty(texts[u], rng)}\n" for u in ids), encoding="utf-8")
            _tar_dir(lang / part, lang / f"{part}.tar.gz", part)
    return lang, texts


_CV_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
              "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]


def write_commonvoice_tree(root: Path, counts: Dict[str, int], seed: int = 0,
                           version: str = "cv-corpus-17.0-2024-03-15",
                           num_workers: int = 1) -> Tuple[Path, Dict[str, str]]:
    """A fixture like Common Voice Vietnamese: ``root/<version>/vi/{<split>.tsv, clips/*.mp3}``
    (48 kHz MP3 as distributed; sentences NFD-decomposed and punctuated). Returns the ``vi``
    directory and {utterance id: clean text}."""
    rng = random.Random(f"commonvoice-{seed}")
    lang = Path(root) / version / "vi"
    named = {part: {f"common_voice_vi_{40000000 + 1000 * j + k}": None for k in range(n)}
             for j, (part, n) in enumerate(counts.items())}
    paths = {u: lang / "clips" / f"{u}.mp3" for d in named.values() for u in d}
    texts = _speak(lang, paths, seed, num_workers)
    for part, utts in named.items():
        rows = ["\t".join(_CV_HEADER)]
        for k, u in enumerate(utts):
            client = f"{k % 3:0>4}" + "c" * 60
            rows.append("\t".join([client, f"{u}.mp3", f"{k:064x}", _dirty(texts[u], rng, nfd=True),
                                   "", "2", "0", "twenties", rng.choice(["male", "female", ""]),
                                   "", "", "vi", ""]))
        (lang / f"{part}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return lang, texts


def write_fleurs_tree(root: Path, counts: Dict[str, int], seed: int = 0,
                      num_workers: int = 1) -> Tuple[Path, Dict[str, str]]:
    """A fixture like FLEURS Vietnamese on the Hugging Face hub: ``root/data/vi_vn/`` with
    ``<split>.tsv`` and ``audio/<split>.tar.gz`` (``<split>/<n>.wav``). Returns ``vi_vn`` and
    {utterance id (file stem): clean text}."""
    rng = random.Random(f"fleurs-{seed}")
    lang = Path(root) / "data" / "vi_vn"
    named = {part: {str(10000000 + 100000 * j + 7 * k): k for k in range(n)}
             for j, (part, n) in enumerate(counts.items())}
    paths = {u: lang / "audio" / part / f"{u}.wav" for part, d in named.items() for u in d}
    texts = _speak(lang, paths, seed, num_workers)
    import soundfile as sf

    for part, utts in named.items():
        rows = []
        for u, k in utts.items():
            clean = texts[u]
            n = sf.info(str(paths[u])).frames
            # ids repeat in FLEURS: one sentence read by several speakers
            rows.append("\t".join([str(1000 + k // 2), f"{u}.wav", _dirty(clean, rng),
                                   clean, " ".join("|".join(clean.split())) + " |", str(n),
                                   rng.choice(["MALE", "FEMALE"])]))
        (lang / f"{part}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        _tar_dir(lang / "audio" / part, lang / "audio" / f"{part}.tar.gz", part)
    return lang, texts


# ----------------------------------------------------------------------------- command line
def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifests", help="lhotse manifests of the corpora given")
    m.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    m.add_argument("--gigaspeech2", type=Path, help="GigaSpeech 2 data/vi directory")
    m.add_argument("--commonvoice", type=Path, help="Common Voice cv-corpus-*/vi directory")
    m.add_argument("--fleurs", type=Path, help="FLEURS data/vi_vn directory")
    m.add_argument("--num-jobs", type=int, default=1, help="processes reading audio headers")
    s = sub.add_parser("labeled", help="the train-<H>h fine-tuning subset (after fbank)")
    s.add_argument("--fbank-dir", type=Path, default=Path("data/fbank"))
    s.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    s.add_argument("--hours", type=float, default=50.0)
    s.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.command == "manifests":
        if args.gigaspeech2:
            prepare_gigaspeech2(args.gigaspeech2, args.manifest_dir, args.num_jobs)
        if args.commonvoice:
            prepare_test_sets("commonvoice", args.commonvoice, args.manifest_dir, num_jobs=args.num_jobs)
        if args.fleurs:
            prepare_test_sets("fleurs", args.fleurs, args.manifest_dir, num_jobs=args.num_jobs)
    else:
        make_labeled_subset(args.fbank_dir, args.manifest_dir, args.hours, args.seed)


if __name__ == "__main__":
    main()
