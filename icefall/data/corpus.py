"""The mini corpus: a seeded, multi-speaker, aligned speech corpus synthesized offline.

Usage (from ``egs/mini/SSL``; ``prepare.sh`` stage 1 calls this)::

    python -m icefall.data.corpus --out-dir download/mini --manifest-dir data/manifests \\
        [--size full|tiny] [--lang en|vi] [--seed 0] [--num-workers 2] [--no-augment]

Writes FLAC audio under ``out-dir/<split>/<speaker>/<utt>.flac`` and, per split,
``<prefix>_recordings_<split>.jsonl.gz``, ``<prefix>_supervisions_<split>.jsonl.gz`` (word and
phone alignments in ``supervision.alignment``) and ``<prefix>_phones_<split>.txt``
(``utt start end phone`` lines). ``docs/mini-corpus.md`` describes the result.

Each utterance is a pure function of (seed, utterance id, speaker): workers can run in any
order and the output is identical byte for byte. The same per-utterance function also writes
fixture trees laid out like LibriSpeech (:func:`write_librispeech_tree`).
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import multiprocessing
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from icefall.data.synth import (SAMPLE_RATE, AugmentConfig, Speaker, SynthesisError,
                                Utterance, augment, synthesize)
from icefall.data.text import generate_sentence

SPLITS = ("train-unlabeled", "train-labeled", "dev", "test")

# Utterance counts per split. Full: about 2 h / 10 min / 10 min / 10 min (see the docs for
# the measured sizes). Tiny: a few dozen short utterances for tests.
SIZES: Dict[str, Dict[str, int]] = {
    "full": {"train-unlabeled": 2360, "train-labeled": 200, "dev": 200, "test": 200},
    "tiny": {"train-unlabeled": 24, "train-labeled": 12, "dev": 8, "test": 8},
}
# Tiny utterances are short so that the whole pipeline runs in seconds.
MAX_WORDS = {"full": 1000, "tiny": 6}

# Voices: the accent; variants: the timbre. Test speakers use variants never heard in training.
_VOICES = {
    "en": ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-us-nyc"],
    "vi": ["vi", "vi-vn-x-central", "vi-vn-x-south"],
}
_TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt",
                   "klatt2", "klatt3", "adam", "john", "linda"]
_TEST_VARIANTS = ["m7", "f5", "klatt4", "benjamin", "steph", "edward"]
NUM_SPEAKERS = {"train": 24, "test": 6}

_SPLIT_CODE = {"train-unlabeled": "u", "train-labeled": "l", "dev": "d", "test": "t"}


def make_speakers(lang: str = "en", seed: int = 0) -> Tuple[List[Speaker], List[Speaker]]:
    """(training speakers, unseen test speakers); training speakers also speak dev."""
    rng = random.Random(f"speakers-{lang}-{seed}")
    voices = _VOICES[lang]

    def draw(n: int, variants: List[str], first: int) -> List[Speaker]:
        out = []
        for k in range(n):
            out.append(Speaker(
                id=f"{lang}{first + k}", lang=lang, voice=voices[k % len(voices)],
                variant=variants[k % len(variants)], rate=rng.randint(140, 200),
                pitch=rng.randint(25, 75), pitch_range=rng.randint(30, 80)))
        return out

    return draw(NUM_SPEAKERS["train"], _TRAIN_VARIANTS, 101), \
        draw(NUM_SPEAKERS["test"], _TEST_VARIANTS, 901)


@dataclass(frozen=True)
class UttSpec:
    """Everything that determines one utterance."""

    id: str
    speaker: Speaker
    seed: int
    max_words: int = 1000
    augment: Optional[AugmentConfig] = AugmentConfig()


@dataclass
class UttResult:
    spec: UttSpec
    text: str
    num_samples: int
    words: List[Tuple[str, float, float]]
    phones: List[Tuple[str, float, float]]
    redraws: int  # sentences espeak could not align, replaced by a new draw


MAX_ATTEMPTS = 20  # sentences drawn for one utterance before giving up


def utterance_text(spec: UttSpec, attempt: int) -> Tuple[str, random.Random]:
    """The sentence of ``spec``'s ``attempt``-th draw, and the rng that goes on to draw its
    silences and augmentation. Every text a split can hold is one of its specs' attempts
    (``icefall.slm.benchmarks`` uses this to keep training sentences out of test sets)."""
    rng = random.Random(f"{spec.seed}-{spec.id}-{attempt}")
    text = generate_sentence(rng, spec.speaker.lang)
    while len(text.split()) > spec.max_words:
        text = generate_sentence(rng, spec.speaker.lang)
    return text, rng


def make_utterance(spec: UttSpec) -> Tuple[str, Utterance, int]:
    """Deterministic text + audio for ``spec``: (text, utterance, number of redraws)."""
    for attempt in range(MAX_ATTEMPTS):
        text, rng = utterance_text(spec, attempt)
        try:
            utt = synthesize(text, spec.speaker, lead_silence=rng.uniform(0.05, 0.3),
                             trail_silence=rng.uniform(0.05, 0.3))
        except SynthesisError as e:
            logging.debug(f"{spec.id}: redraw after {e}")
            continue
        if spec.augment is not None:
            # numpy wants an int seed: derive one from the string-seeded rng.
            utt.audio = augment(utt.audio, np.random.default_rng(rng.getrandbits(63)),
                                spec.augment)
        return text, utt, attempt
    raise SynthesisError(f"{spec.id}: {MAX_ATTEMPTS} sentences in a row failed to align")


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def _write_flac(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _to_int16(audio), SAMPLE_RATE, format="FLAC", subtype="PCM_16")


def _synth_to_file(job: Tuple[UttSpec, str]) -> UttResult:
    spec, path = job
    text, utt, redraws = make_utterance(spec)
    _write_flac(Path(path), utt.audio)
    return UttResult(spec, text, len(utt.audio), utt.words, utt.phones, redraws)


SHARD_SIZE = 32


def _synth_shard(jobs: List[Tuple[UttSpec, str]]) -> List[UttResult]:
    return [_synth_to_file(job) for job in jobs]


def _synth_all(jobs: Sequence, num_workers: int, shard_fn: Callable[[list], list] = _synth_shard) -> list:
    """Synthesizes ``jobs`` in order, in shards of SHARD_SIZE, each in a new process:
    ``shard_fn(list of jobs) -> list of results`` (a module-level function; default: ``(UttSpec,
    path)`` jobs -> ``UttResult``s).

    espeak-ng carries state from one utterance to the next (the output of a text shifts by a
    few samples with what was spoken before) and cannot be re-initialised in a process. So
    every shard starts from a fresh espeak: a new process forked from a forkserver that never
    synthesized. Output is then identical for any ``num_workers`` and any scheduling.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["icefall.data.synth"])
    shards = [list(jobs[i: i + SHARD_SIZE]) for i in range(0, len(jobs), SHARD_SIZE)]
    with ctx.Pool(max(1, num_workers), maxtasksperchild=1) as pool:
        return [r for shard in pool.imap(shard_fn, shards, chunksize=1) for r in shard]


def plan_corpus(size: str = "full", lang: str = "en", seed: int = 0,
                augment_config: Optional[AugmentConfig] = AugmentConfig()
                ) -> Dict[str, List[UttSpec]]:
    """Utterance specs per split. Speakers are assigned round-robin, so every training speaker
    appears in train-unlabeled, train-labeled and dev; test has the unseen speakers."""
    train_spk, test_spk = make_speakers(lang, seed)
    plan = {}
    for split in SPLITS:
        speakers = test_spk if split == "test" else train_spk
        plan[split] = [
            UttSpec(id=f"{spk.id}-{_SPLIT_CODE[split]}{n:05d}", speaker=spk, seed=seed,
                    max_words=MAX_WORDS[size], augment=augment_config)
            for n in range(SIZES[size][split]) for spk in [speakers[n % len(speakers)]]
        ]
    return plan


def _write_jsonl_gz(items: Iterable[dict], path: Path) -> None:
    """jsonl.gz with a zero gzip timestamp, so that equal content means equal bytes."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for item in items:
            f.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(path)


def manifest_paths(manifest_dir: Path, split: str, prefix: str = "mini") -> Dict[str, Path]:
    d = Path(manifest_dir)
    return {
        "recordings": d / f"{prefix}_recordings_{split}.jsonl.gz",
        "supervisions": d / f"{prefix}_supervisions_{split}.jsonl.gz",
        "phones": d / f"{prefix}_phones_{split}.txt",
    }


def _manifest_items(r: UttResult, audio_path: Path) -> Tuple[dict, dict]:
    from lhotse import AudioSource, Recording, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    duration = r.num_samples / SAMPLE_RATE
    rec = Recording(id=r.spec.id, sampling_rate=SAMPLE_RATE, num_samples=r.num_samples,
                    duration=duration,
                    sources=[AudioSource(type="file", channels=[0], source=str(audio_path))])

    def items(ali):
        return [AlignmentItem(symbol=s, start=b, duration=round(e - b, 4)) for s, b, e in ali]

    sup = SupervisionSegment(
        id=r.spec.id, recording_id=r.spec.id, start=0.0, duration=duration, channel=0,
        text=r.text, speaker=r.spec.speaker.id, language=r.spec.speaker.lang,
        alignment={"word": items(r.words), "phone": items(r.phones)})
    return rec.to_dict(), sup.to_dict()


def synthesize_corpus(out_dir: Path, manifest_dir: Path, size: str = "full", lang: str = "en",
                      seed: int = 0, num_workers: int = 2,
                      augment_config: Optional[AugmentConfig] = AugmentConfig(),
                      prefix: str = "mini") -> Dict[str, Dict[str, float]]:
    """Synthesizes every split and writes audio + manifests. Returns per-split statistics
    {"utterances", "hours", "speakers", "redraws"}."""
    out_dir, manifest_dir = Path(out_dir), Path(manifest_dir)
    manifest_dir.mkdir(parents=True, exist_ok=True)
    stats: Dict[str, Dict[str, float]] = {}
    for split, specs in plan_corpus(size, lang, seed, augment_config).items():
        jobs = [(s, str(out_dir / split / s.speaker.id / f"{s.id}.flac")) for s in specs]
        recs, sups, phone_lines, redraws = [], [], [], 0
        for r, (_, path) in zip(_synth_all(jobs, num_workers), jobs):
            rec, sup = _manifest_items(r, Path(path))
            recs.append(rec)
            sups.append(sup)
            phone_lines += [f"{r.spec.id} {b:.4f} {e:.4f} {p}\n" for p, b, e in r.phones]
            redraws += r.redraws
        paths = manifest_paths(manifest_dir, split, prefix)
        _write_jsonl_gz(recs, paths["recordings"])
        _write_jsonl_gz(sups, paths["supervisions"])
        paths["phones"].write_text("".join(phone_lines), encoding="utf-8")
        stats[split] = {
            "utterances": len(recs),
            "hours": sum(r["duration"] for r in recs) / 3600,
            "speakers": len({s["speaker"] for s in sups}),
            "redraws": redraws,
        }
        logging.info(f"{split}: {stats[split]}")
    train_spk, test_spk = make_speakers(lang, seed)
    (manifest_dir / f"{prefix}_speakers.tsv").write_text(
        "speaker\tlang\tvoice\tvariant\trate\tpitch\trange\tsplits\n" + "".join(
            f"{s.id}\t{s.lang}\t{s.voice}\t{s.variant}\t{s.rate}\t{s.pitch}\t{s.pitch_range}\t"
            f"{splits}\n"
            for group, splits in ((train_spk, "train,dev"), (test_spk, "test"))
            for s in group), encoding="utf-8")
    return stats


def validate_corpus(manifest_dir: Path, prefix: str = "mini", splits: Sequence[str] = SPLITS,
                    read_data: bool = False) -> Dict[str, Dict[str, float]]:
    """Checks every split with ``lhotse.qa`` (and reads the audio if ``read_data``) and that
    the phone alignment tiles each utterance and the words are in order inside it. Raises on
    the first problem (naming the utterance); returns the per-split statistics."""
    from lhotse import load_manifest
    from lhotse.qa import validate_recordings_and_supervisions

    stats = {}
    for split in splits:
        paths = manifest_paths(manifest_dir, split, prefix)
        recs, sups = load_manifest(paths["recordings"]), load_manifest(paths["supervisions"])
        validate_recordings_and_supervisions(recs, sups, read_data=read_data)
        for sup in sups:
            check_alignment(sup)
        stats[split] = {
            "utterances": len(recs),
            "hours": sum(r.duration for r in recs) / 3600,
            "speakers": len({s.speaker for s in sups}),
        }
    return stats


def check_alignment(sup, tol: float = 1e-3) -> None:
    """Raises ValueError unless ``sup.alignment["phone"]`` tiles [0, duration] with positive
    durations and ``sup.alignment["word"]`` is ordered, non-overlapping, inside it and matches
    the transcript."""
    phones, words = sup.alignment["phone"], sup.alignment["word"]
    t = 0.0
    for p in phones:
        if abs(p.start - t) > tol or p.duration <= 0:
            raise ValueError(f"{sup.id}: phone alignment not contiguous at {p}")
        t = p.start + p.duration
    if abs(t - sup.duration) > tol:
        raise ValueError(f"{sup.id}: phones end at {t:.4f}, utterance at {sup.duration:.4f}")
    if [w.symbol for w in words] != sup.text.split():
        raise ValueError(f"{sup.id}: word alignment does not match the transcript")
    t = 0.0
    for w in words:
        if w.start < t - tol or w.duration <= 0:
            raise ValueError(f"{sup.id}: word alignment out of order at {w}")
        t = w.start + w.duration
    if t > sup.duration + tol:
        raise ValueError(f"{sup.id}: words end after the utterance")


def write_librispeech_tree(root: Path, splits: Dict[str, int], seed: int = 0,
                           speakers_per_split: int = 2, chapters_per_speaker: int = 1,
                           lang: str = "en", num_workers: int = 1, dirname: str = "LibriSpeech",
                           first_id: int = 1) -> Path:
    """A fixture laid out like LibriSpeech: ``root/<dirname>/<split>/<spk>/<chapter>/``
    with ``<spk>-<chapter>-<utt:04d>.flac`` and ``<spk>-<chapter>.trans.txt``.

    ``splits`` maps a split name (e.g. "train-clean-100", or a path such as "1h/0/clean") to
    its number of utterances; speaker k of split i is numbered ``100 * (first_id + i) + k``.
    Returns the ``<dirname>`` directory.
    """
    train_spk, test_spk = make_speakers(lang, seed)
    base = Path(root) / dirname
    for k, (split, n) in enumerate(splits.items()):
        pool = test_spk if split.startswith(("dev", "test")) else train_spk
        spks = [pool[(k * speakers_per_split + i) % len(pool)] for i in range(speakers_per_split)]
        jobs, groups = [], {}
        num = first_id + k
        for u in range(n):
            spk = spks[u % len(spks)]
            spk_num = 100 * num + spks.index(spk)  # numeric ids, as in LibriSpeech
            chapter = 1000 * num + (u // len(spks)) % chapters_per_speaker
            utt_id = f"{spk_num}-{chapter}-{u:04d}"
            d = base / split / str(spk_num) / str(chapter)
            jobs.append((UttSpec(id=utt_id, speaker=spk, seed=seed), str(d / f"{utt_id}.flac")))
            groups.setdefault(d / f"{spk_num}-{chapter}.trans.txt", []).append(len(jobs) - 1)
        results = _synth_all(jobs, num_workers)
        for trans, idx in groups.items():
            trans.write_text("".join(f"{results[i].spec.id} {results[i].text}\n" for i in idx),
                             encoding="utf-8")
    return base


def write_librispeech_finetuning_tree(root: Path, utts_per_dir: int = 1, seed: int = 0,
                                      num_workers: int = 1) -> Path:
    """A fixture laid out like Libri-light's ``librispeech_finetuning`` archive:
    ``root/librispeech_finetuning/{1h/{0..5}/{clean,other},9h/{clean,other}}/<spk>/<chapter>/``,
    each a LibriSpeech-style tree of ``utts_per_dir`` utterances (speaker numbers from 5000 on,
    apart from those of :func:`write_librispeech_tree`). Returns the ``librispeech_finetuning``
    directory."""
    dirs = [f"1h/{k}/{kind}" for k in range(6) for kind in ("clean", "other")] + ["9h/clean", "9h/other"]
    return write_librispeech_tree(root, {d: utts_per_dir for d in dirs}, seed=seed, speakers_per_split=1,
                                  num_workers=num_workers, dirname="librispeech_finetuning", first_id=50)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, help="where the FLAC files go")
    p.add_argument("--manifest-dir", type=Path, required=True)
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--lang", choices=sorted(_VOICES), default="en")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--prefix", default="mini", help="manifest file name prefix")
    p.add_argument("--no-augment", action="store_true", help="clean audio (no noise/reverb)")
    p.add_argument("--validate", action="store_true",
                   help="only validate existing manifests (lhotse.qa + alignments, reads audio)")
    args = p.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.validate:
        stats = validate_corpus(args.manifest_dir, args.prefix, read_data=True)
    else:
        stats = synthesize_corpus(args.out_dir, args.manifest_dir, args.size, args.lang,
                                  args.seed, args.num_workers,
                                  None if args.no_augment else AugmentConfig(), args.prefix)
    for split, s in stats.items():
        print(f"{split:16s} {s['utterances']:6d} utts {s['hours']:.3f} h "
              f"{s['speakers']:3d} speakers")


if __name__ == "__main__":
    main()
