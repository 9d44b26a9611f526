"""Probing tasks derived from the mini corpus' transcripts, speakers and alignments.

Each task trains on one split and is scored on another (``TASK_SPLITS``):

=======  =====================  ==========================================================
task     train / test           test set
=======  =====================  ==========================================================
pr       train-labeled / test   phones (CTC), PER, unseen speakers
asr      train-labeled / test   letters with ``|`` between words (CTC), WER, unseen speakers
sid      train-labeled / dev    held-out utterances of the 24 training speakers, accuracy
asv      train-labeled / test   SID-trained embeddings; EER over every pair of test utterances
                                (6 speakers never trained on)
ks       train-labeled / test   word segments: 10 keywords + unknown + silence, accuracy
rate     train-labeled / test   speaker's espeak rate class (slow < 160 <= medium < 180 <=
                                fast wpm), accuracy on unseen speakers
qbe      dev / test             no training: the layer is chosen on dev queries, MAP and
                                MTWV reported on test queries of other words
=======  =====================  ==========================================================

:func:`check_splits` verifies that nothing leaks (no cut in both sets; no test speaker in training
where the test speakers must be unseen; QbE test words never used on dev).
"""
from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

SIL = "sil"
BLANK = "<blk>"
WORD_SEP = "|"

TASK_SPLITS: Dict[str, Tuple[str, str]] = {
    "pr": ("train-labeled", "test"), "asr": ("train-labeled", "test"), "sid": ("train-labeled", "dev"),
    "asv": ("train-labeled", "test"), "ks": ("train-labeled", "test"), "rate": ("train-labeled", "test"),
    "qbe": ("dev", "test"),
}
TASKS = tuple(TASK_SPLITS)

#: Speaking-rate classes of the rate task: (name, lowest rate in words per minute).
RATE_CLASSES = (("slow", 0), ("medium", 160), ("fast", 180))


@dataclass(frozen=True)
class Example:
    """One probe input: frames ``[start, end)`` seconds of a cut (``end`` None: to its end), its
    target (class index, or CTC token ids) and the reference symbols scoring compares with."""

    cut_id: str
    speaker: str
    target: Union[int, Tuple[int, ...]]
    start: float = 0.0
    end: Optional[float] = None
    ref: Tuple[str, ...] = ()


@dataclass
class Task:
    """A task's examples and label set.

    ``kind``: "ctc" (frame level; ``symbols[0]`` is the blank), "class" (utterance level), "asv"
    (class-trained, scored by ``trials``: (same speaker 0/1, cut a, cut b)), or "qbe" (no training;
    ``train``/``test`` hold query word segments, every cut of the split is a document)."""

    name: str
    kind: str
    train: List[Example]
    test: List[Example]
    symbols: List[str]
    unseen_test_speakers: bool
    trials: List[Tuple[int, str, str]] = field(default_factory=list)
    docs: Dict[str, List[str]] = field(default_factory=dict)  # qbe: split -> document cut ids


def _sup(cut):
    if len(cut.supervisions) != 1:
        raise ValueError(f"cut {cut.id}: expected one supervision, found {len(cut.supervisions)}")
    return cut.supervisions[0]


def _alignment(cut, kind: str):
    ali = _sup(cut).alignment or {}
    if kind not in ali:
        raise ValueError(f"cut {cut.id}: its supervision has no {kind!r} alignment")
    return ali[kind]


def read_speaker_table(path: Union[str, Path]) -> Dict[str, Dict[str, str]]:
    """``mini_speakers.tsv`` -> ``{speaker: {column: value}}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no speaker table (prepare.sh writes data/manifests/mini_speakers.tsv)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "speaker" not in rows[0] or "rate" not in rows[0]:
        raise ValueError(f"{path}: expected a tab-separated table with 'speaker' and 'rate' columns")
    return {r["speaker"]: r for r in rows}


def rate_class(words_per_minute: float) -> int:
    """Index into :data:`RATE_CLASSES`."""
    return max(i for i, (_, low) in enumerate(RATE_CLASSES) if words_per_minute >= low)


def _ctc_task(name: str, train_cuts, test_cuts, units) -> Task:
    """``units(cut) -> (symbols of the target, reference words for scoring)``."""
    train_units = [units(c) for c in train_cuts]
    symbols = [BLANK] + sorted({s for u, _ in train_units for s in u})
    index = {s: i for i, s in enumerate(symbols)}
    train = [Example(c.id, _sup(c).speaker, tuple(index[s] for s in u), ref=tuple(r))
             for c, (u, r) in zip(train_cuts, train_units)]
    test = [Example(c.id, _sup(c).speaker, (), ref=tuple(units(c)[1])) for c in test_cuts]
    return Task(name, "ctc", train, test, symbols, unseen_test_speakers=True)


def _phones(cut) -> Tuple[List[str], List[str]]:
    p = [a.symbol for a in _alignment(cut, "phone") if a.symbol != SIL]
    return p, p


def _letters(cut) -> Tuple[List[str], List[str]]:
    words = _sup(cut).text.split()
    return list(WORD_SEP.join(words)), words


def _speaker_task(name: str, kind: str, train_cuts, test_cuts, unseen: bool) -> Task:
    speakers = sorted({_sup(c).speaker for c in train_cuts})
    index = {s: i for i, s in enumerate(speakers)}
    train = [Example(c.id, _sup(c).speaker, index[_sup(c).speaker]) for c in train_cuts]
    test = [Example(c.id, _sup(c).speaker, index.get(_sup(c).speaker, -1)) for c in test_cuts]
    task = Task(name, kind, train, test, speakers, unseen_test_speakers=unseen)
    if kind == "asv":
        task.trials = [(int(a.speaker == b.speaker), a.cut_id, b.cut_id)
                       for i, a in enumerate(test) for b in test[i + 1:]]
    return task


def keywords_of(cuts, num_keywords: int = 10, min_letters: int = 4) -> List[str]:
    """The ``num_keywords`` most frequent words of at least ``min_letters`` letters in the word
    alignments of ``cuts`` (ties: alphabetical)."""
    counts = Counter(a.symbol for c in cuts for a in _alignment(c, "word") if len(a.symbol) >= min_letters)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:num_keywords]]


def _ks_examples(cuts, keywords: Sequence[str], seed: int, min_silence: float = 0.1) -> List[Example]:
    """Every keyword segment; as many "unknown" word segments and "silence" segments (``sil``
    phones of at least ``min_silence`` s, background noise) as the mean keyword count, drawn with
    ``seed``."""
    index = {w: i for i, w in enumerate(keywords)}
    unknown, silence = len(keywords), len(keywords) + 1
    kws, others, sils = [], [], []
    for c in cuts:
        spk = _sup(c).speaker
        for a in _alignment(c, "word"):
            ex = Example(c.id, spk, index.get(a.symbol, unknown), a.start, a.start + a.duration, (a.symbol,))
            (kws if a.symbol in index else others).append(ex)
        for a in _alignment(c, "phone"):
            if a.symbol == SIL and a.duration >= min_silence:
                sils.append(Example(c.id, spk, silence, a.start, a.start + a.duration, (SIL,)))
    n = max(1, round(len(kws) / max(len(keywords), 1)))
    rng = random.Random(seed)
    return kws + rng.sample(others, min(n, len(others))) + rng.sample(sils, min(n, len(sils)))


def _ks_task(train_cuts, test_cuts, seed: int) -> Task:
    keywords = keywords_of(train_cuts)
    return Task("ks", "class", _ks_examples(train_cuts, keywords, seed), _ks_examples(test_cuts, keywords, seed + 1),
                keywords + ["<unknown>", "<silence>"], unseen_test_speakers=True)


def _rate_task(train_cuts, test_cuts, speakers: Dict[str, Dict[str, str]]) -> Task:
    def examples(cuts):
        out = []
        for c in cuts:
            spk = _sup(c).speaker
            if spk not in speakers:
                raise ValueError(f"cut {c.id}: speaker {spk} is not in the speaker table")
            out.append(Example(c.id, spk, rate_class(float(speakers[spk]["rate"]))))
        return out

    return Task("rate", "class", examples(train_cuts), examples(test_cuts), [n for n, _ in RATE_CLASSES],
                unseen_test_speakers=True)


def qbe_queries(cuts, exclude: Sequence[str] = (), max_queries: int = 30, min_letters: int = 5) -> List[Example]:
    """Query word segments of ``cuts``: words of at least ``min_letters`` letters that occur in
    at least two cuts, not in ``exclude``; the first occurrence of each (in cut order) is the
    query, up to ``max_queries`` words (the most widespread first, ties alphabetical)."""
    first, spread = {}, Counter()
    for c in cuts:
        for w in {a.symbol for a in _alignment(c, "word")}:
            spread[w] += 1
        for a in _alignment(c, "word"):
            if a.symbol not in first:
                first[a.symbol] = Example(c.id, _sup(c).speaker, -1, a.start, a.start + a.duration, (a.symbol,))
    skip = set(exclude)
    words = [w for w, n in spread.items() if n >= 2 and len(w) >= min_letters and w not in skip]
    words = sorted(words, key=lambda w: (-spread[w], w))[:max_queries]
    return [first[w] for w in words]


def _qbe_task(dev_cuts, test_cuts, max_queries: int) -> Task:
    dev = qbe_queries(dev_cuts, max_queries=max_queries)
    test = qbe_queries(test_cuts, exclude=[q.ref[0] for q in dev], max_queries=max_queries)
    return Task("qbe", "qbe", dev, test, [], unseen_test_speakers=False,
                docs={"train": [c.id for c in dev_cuts], "test": [c.id for c in test_cuts]})


def qbe_relevance(query: Example, cuts) -> List[bool]:
    """Whether each cut (document) contains the query's word; the query's own cut is not a
    document (scoring leaves it out)."""
    return [any(a.symbol == query.ref[0] for a in _alignment(c, "word")) for c in cuts]


def build_task(name: str, train_cuts: Sequence, test_cuts: Sequence, speakers: Optional[Dict[str, Dict[str, str]]] = None,
               seed: int = 0, max_queries: int = 30) -> Task:
    """The task ``name`` (see :data:`TASK_SPLITS` for which splits to pass); ``speakers``: the
    speaker table (:func:`read_speaker_table`), needed by "rate"."""
    train_cuts, test_cuts = list(train_cuts), list(test_cuts)
    if name == "pr":
        task = _ctc_task("pr", train_cuts, test_cuts, _phones)
    elif name == "asr":
        task = _ctc_task("asr", train_cuts, test_cuts, _letters)
    elif name in ("sid", "asv"):
        task = _speaker_task(name, "class" if name == "sid" else "asv", train_cuts, test_cuts, unseen=name == "asv")
    elif name == "ks":
        task = _ks_task(train_cuts, test_cuts, seed)
    elif name == "rate":
        if speakers is None:
            raise ValueError("the rate task needs the speaker table (--speakers data/manifests/mini_speakers.tsv)")
        task = _rate_task(train_cuts, test_cuts, speakers)
    elif name == "qbe":
        task = _qbe_task(train_cuts, test_cuts, max_queries)
    else:
        raise ValueError(f"unknown task {name!r}; one of {TASKS}")
    check_splits(task)
    return task


def check_splits(task: Task) -> None:
    """Raise ValueError when the training examples leak into the test set: a cut in both; a test
    speaker seen in training where test speakers must be unseen; for SID a test speaker outside
    the closed set; for QbE a test query word also queried on dev."""
    shared = {e.cut_id for e in task.train} & {e.cut_id for e in task.test}
    if shared and task.kind != "qbe":
        raise ValueError(f"task {task.name}: {len(shared)} cuts in both training and test, e.g. {sorted(shared)[:3]}")
    train_spk = {e.speaker for e in task.train}
    test_spk = {e.speaker for e in task.test}
    if task.unseen_test_speakers and train_spk & test_spk:
        raise ValueError(f"task {task.name}: test speakers {sorted(train_spk & test_spk)} are in the training set")
    if task.name == "sid" and not test_spk <= train_spk:
        raise ValueError(f"task sid: test speakers {sorted(test_spk - train_spk)} have no training utterances")
    if task.kind == "qbe":
        shared_words = {q.ref[0] for q in task.train} & {q.ref[0] for q in task.test}
        if shared_words:
            raise ValueError(f"task qbe: test query words {sorted(shared_words)} were also dev queries")
