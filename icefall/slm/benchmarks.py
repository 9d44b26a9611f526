"""Zero-shot spoken-LM benchmarks synthesized offline: sWUGGY-, sBLIMP- and tSC-like pairs.

Each benchmark is a set of spoken pairs (a *good* and a *bad* member, spoken by the same unseen
test voice of the mini corpus); an LM gets a pair right when it gives the good member the higher
log-probability (chance = 50%, a tie counts one half), summed over the member's tokens or
normalised by their number (ZeroSpeech 2021's sWUGGY choice, SpidR's for every task; both are
reported, :func:`score_pairs`):

- ``lexical`` (sWUGGY-like): a word of the generator's vocabulary vs a non-word made from it by
  changing one letter into another of its class (vowel for vowel, consonant for consonant), such
  that every letter trigram of the non-word (with word edges) occurs in an English lexicon
  (``english-words``: web2 + GCIDE), the non-word is in neither that lexicon nor the vocabulary,
  and espeak speaks it with as many phones as the word (same length; pronounceable). Not
  filtered: non-words that merely sound like a real word ("hed").
- ``syntactic`` (sBLIMP-like): a generated sentence vs a minimal edit of it, one phenomenon per
  pair: ``subject_verb_agreement`` (the present-tense verb in the other number: one word),
  ``determiner_noun_agreement`` (this/that <-> these/those before a noun of the other number:
  one word), ``word_order`` (a determiner swapped with the next word, or a verb with its
  preposition: two adjacent words), ``argument_structure`` (a transitive verb replaced by a
  strictly intransitive one of the same form, before its object: one word).
- ``story`` (tSC-like): a spoken first sentence, then a continuation whose subject is "the X".
  The grammar has no topics, so *coherence* here is entity continuity: X is the head noun of the
  first sentence's subject (coherent) or the head noun of another story's first sentence
  (incoherent); nothing else differs. Pairs come in counterbalanced twins (prefix A with
  continuations X/Y, prefix B with Y/X, same voice): with summed log-probabilities a model
  blind to the first sentence gets exactly one of each twin right (50% by construction). Single-sentence
  training data teach no cross-sentence link; above-chance scores need in-context copying.

No good member (or story sentence) is a sentence of the mini corpus's training splits (any of
the draws :func:`icefall.data.corpus.utterance_text` can make). Everything is a pure function of
the seed: texts in this process, audio in fresh espeak processes per shard
(``icefall.data.corpus._synth_all``).

Layout written by :func:`build_benchmarks`::

    out_dir/pairs.jsonl                 one pair per line (see :class:`Pair`)
    out_dir/audio/<task>/<pair id>-{good,bad}.flac
    out_dir/mini_recordings_bench.jsonl.gz, mini_supervisions_bench.jsonl.gz
                                        every member (id <pair id>-good|bad) as a corpus split
                                        "bench": ``compute_fbank_split`` then the unit
                                        extractors (``icefall.ssl.labels``, ``extract_units.py``)
                                        treat it like dev or test
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from icefall.data.synth import SAMPLE_RATE, SIL, Speaker, SynthesisError, synthesize
from icefall.data.text import (_EN_IVERBS, _EN_NAMES, _EN_NOUNS, _EN_VERBS, generate_sentence,
                               vocabulary)

TASKS = ("lexical", "syntactic", "story")
SYNTAX_PHENOMENA = ("subject_verb_agreement", "determiner_noun_agreement", "word_order",
                    "argument_structure")
MEMBERS = ("good", "bad")
SPLIT = "bench"  # manifests: mini_{recordings,supervisions}_bench.jsonl.gz, as a corpus split
EDGE_SILENCE = 0.1  # seconds before and after each spoken member
STORY_GAP = 0.4  # seconds of silence between the first sentence and the continuation

# Intransitive verbs that cannot take a direct object ("walk the dog", "sing a song" can).
_STRICT_INTRANSITIVE = [f for f in _EN_IVERBS if f[0] in ("sleep", "laugh", "smile", "arrive")]
_NOUNS = set(w.upper() for w in _EN_NOUNS)
_PLURALS = {n + "S": n for n in _NOUNS}
_NAMES = set(w.upper() for w in _EN_NAMES)
_DET_SWAP = {"THIS": "THESE", "THESE": "THIS", "THAT": "THOSE", "THOSE": "THAT"}


@dataclass(frozen=True)
class Pair:
    """One benchmark item. ``good``/``bad``: the texts (upper case) of the members; for
    ``story`` the continuations, spoken after the shared ``prefix``."""

    id: str
    task: str
    phenomenon: str
    speaker: str
    good: str
    bad: str
    prefix: str = ""

    def text(self, member: str) -> str:
        body = self.good if member == "good" else self.bad
        return f"{self.prefix} {body}" if self.prefix else body

    def member_id(self, member: str) -> str:
        return f"{self.id}-{member}"


# ----------------------------------------------------------------------------- texts
def training_sentences(size: str = "full", lang: str = "en", seed: int = 0,
                       splits: Sequence[str] = ("train-unlabeled", "train-labeled")) -> Set[str]:
    """Every sentence the mini corpus's ``splits`` can contain (all redraws included)."""
    from icefall.data.corpus import MAX_ATTEMPTS, plan_corpus, utterance_text

    plan = plan_corpus(size, lang, seed, augment_config=None)
    return {utterance_text(spec, a)[0] for s in splits for spec in plan[s] for a in range(MAX_ATTEMPTS)}


def _verb_table() -> Dict[str, Tuple[Tuple[str, str, str], int, bool]]:
    """word -> (forms, form index, transitive), upper case."""
    table = {}
    for forms, transitive in [(f, True) for f in _EN_VERBS] + [(f, False) for f in _EN_IVERBS]:
        up = tuple(w.upper() for w in forms)
        for i, w in enumerate(up):
            table.setdefault(w, (up, i, transitive))
    return table


_VERBS = _verb_table()


def subject_end(words: Sequence[str]) -> int:
    """Index just past the subject noun phrase (a name, or determiner/number + adjectives +
    noun) of a generated English sentence (upper case words)."""
    if words[0] in _NAMES:
        return 1
    for i in range(1, len(words)):
        if words[i] in _NOUNS or words[i] in _PLURALS:
            return i + 1
    raise ValueError(f"no subject noun in {' '.join(words)!r}")


def _head_noun(words: Sequence[str], end: int) -> Optional[str]:
    """The singular common noun heading the subject ending at ``end`` (None for a name)."""
    w = words[end - 1]
    return None if w in _NAMES else _PLURALS.get(w, w)


def syntactic_edit(words: List[str], phenomenon: str, rng: random.Random) -> Optional[List[str]]:
    """The ungrammatical member for ``phenomenon``, or None when the sentence offers none."""
    end = subject_end(words)
    verb = words[end] if end < len(words) else ""
    bad = list(words)
    if phenomenon == "subject_verb_agreement":
        if verb not in _VERBS:
            return None
        forms, i, _ = _VERBS[verb]
        if i not in (0, 1) or forms[0] == forms[1]:
            return None  # past tense (or "will" + base): nothing to agree
        bad[end] = forms[1 - i]
        return bad
    if phenomenon == "determiner_noun_agreement":
        spots = [k for k, w in enumerate(words) if w in _DET_SWAP]
        if not spots:
            return None
        k = rng.choice(spots)
        bad[k] = _DET_SWAP[words[k]]
        return bad
    if phenomenon == "word_order":
        if rng.random() < 0.5 and verb in _VERBS and not _VERBS[verb][2] and end + 1 < len(words):
            k = end  # intransitive verb + preposition: "SLEPT IN" -> "IN SLEPT"
        elif words[0] not in _NAMES:
            k = 0  # determiner + next word: "THE BIG DOG" -> "BIG THE DOG"
        else:
            return None
        bad[k], bad[k + 1] = bad[k + 1], bad[k]
        return bad
    if phenomenon == "argument_structure":
        if verb not in _VERBS or not _VERBS[verb][2]:
            return None
        forms, i, _ = _VERBS[verb]
        obj = end + 1
        if obj >= len(words) or words[obj] in _VERBS:
            return None
        bad[end] = rng.choice(_STRICT_INTRANSITIVE)[i].upper()
        return bad
    raise ValueError(f"unknown phenomenon {phenomenon!r}; known: {SYNTAX_PHENOMENA}")


def syntactic_pairs(n: int, speakers: Sequence[Speaker], seed: int, exclude: Set[str]) -> List[Pair]:
    """``n`` sentence pairs, phenomena in turn, each good sentence new (not in ``exclude``)."""
    pairs, seen = [], set(exclude)
    for k in range(n):
        phenomenon = SYNTAX_PHENOMENA[k % len(SYNTAX_PHENOMENA)]
        rng = random.Random(f"{seed}-syntactic-{k}")
        while True:
            good = generate_sentence(rng, "en")
            if good in seen:
                continue
            bad = syntactic_edit(good.split(), phenomenon, rng)
            if bad is not None:
                break
        seen.add(good)
        pairs.append(Pair(f"syntactic-{k:04d}", "syntactic", phenomenon, speakers[k % len(speakers)].id,
                          good, " ".join(bad)))
    return pairs


def _continuation(rng: random.Random, avoid: Set[str]) -> List[str]:
    """Words after the subject of a new past- or future-tense sentence with a common-noun
    subject (so that "THE X" + them is grammatical for any noun X) that mentions no noun of
    ``avoid`` (singular forms)."""
    while True:
        words = generate_sentence(rng, "en").split()
        end = subject_end(words)
        if words[0] in _NAMES or end >= len(words):
            continue
        verb = words[end]
        if verb != "WILL" and (verb not in _VERBS or _VERBS[verb][1] != 2):
            continue
        if not nouns_of(" ".join(words[end:])) & avoid:
            return words[end:]


def nouns_of(text: str) -> Set[str]:
    """The common nouns of a sentence, singular."""
    return {_PLURALS.get(w, w) for w in text.split() if w in _NOUNS or w in _PLURALS}


def _prefix(rng: random.Random, exclude: Set[str], avoid: Set[str]) -> Tuple[str, str]:
    """A new first sentence with a common-noun subject that it names only once, mentioning no
    noun of ``avoid``; and that noun."""
    while True:
        text = generate_sentence(rng, "en")
        words = text.split()
        end = subject_end(words)
        noun = _head_noun(words, end)
        if text in exclude or noun is None or nouns_of(text) & avoid:
            continue
        if noun not in nouns_of(" ".join(words[end:])):
            return text, noun


def story_pairs(n: int, speakers: Sequence[Speaker], seed: int, exclude: Set[str]) -> List[Pair]:
    """``n`` (rounded up to even) story pairs in counterbalanced twins (module docstring)."""
    pairs, seen = [], set(exclude)
    for k in range((n + 1) // 2):
        rng = random.Random(f"{seed}-story-{k}")
        while True:
            pa, x = _prefix(rng, seen, set())
            pb, y = _prefix(rng, seen | {pa}, {x})
            if y in nouns_of(pa):
                continue  # each first sentence must mention its own noun only
            rest = _continuation(rng, nouns_of(pa) | nouns_of(pb))
            cx, cy = " ".join(["THE", x] + rest), " ".join(["THE", y] + rest)
            if not {cx, cy} & seen:
                break
        seen |= {pa, pb, cx, cy}
        spk = speakers[k % len(speakers)].id
        pairs.append(Pair(f"story-{2 * k:04d}", "story", "entity_continuity", spk, cx, cy, pa))
        pairs.append(Pair(f"story-{2 * k + 1:04d}", "story", "entity_continuity", spk, cy, cx, pb))
    return pairs


def english_lexicon() -> Set[str]:
    """Lower-case English words (web2 + GCIDE, from the ``english-words`` package)."""
    try:
        from english_words import get_english_words_set
    except ImportError as e:
        raise ImportError("the lexical benchmark needs the english-words package "
                          "(pip install english-words): it rejects real words") from e
    return get_english_words_set(["web2", "gcide"], lower=True)


def _trigrams(word: str) -> Set[str]:
    w = f"^{word}$"
    return {w[i: i + 3] for i in range(len(w) - 2)}


def is_word(word: str, lexicon: Set[str]) -> bool:
    """``word`` or its stem under a regular inflection (-s, -es, -ed, -d, -ing) is in
    ``lexicon`` (web2 lists "litter" but not "litters")."""
    stems = [word] + [word[: -len(x)] for x in ("s", "es", "ed", "d", "ing") if word.endswith(x)]
    return any(s in lexicon for s in stems if len(s) > 1)


def spoken_phones(text: str, speaker: Speaker) -> int:
    """Phones (silences excluded) espeak speaks for ``text`` with ``speaker``; 0 if it fails."""
    try:
        return sum(1 for p, _, _ in synthesize(text, speaker).phones if p != SIL)
    except SynthesisError:
        return 0


def nonword(word: str, speaker: Speaker, rng: random.Random, lexicon: Set[str],
            trigrams: Set[str], vocab: Set[str], tries: int = 40) -> Optional[str]:
    """A pronounceable, phonotactically plausible non-word one letter away from ``word``
    (lower case) with as many spoken phones, or None (see the module docstring)."""
    vowels, consonants = "aeiou", "bcdfghklmnprstvw"  # no j q x y z: rare, odd-looking
    target = spoken_phones(word, speaker)
    if target == 0:
        return None
    for _ in range(tries):
        pos = rng.randrange(len(word))
        pool = vowels if word[pos] in vowels else consonants
        cand = word[:pos] + rng.choice([c for c in pool if c != word[pos]]) + word[pos + 1:]
        if is_word(cand, lexicon) or cand.upper() in vocab or not _trigrams(cand) <= trigrams:
            continue
        if spoken_phones(cand, speaker) == target:
            return cand
    return None


def lexical_pairs(n: int, speakers: Sequence[Speaker], seed: int) -> List[Pair]:
    """Up to ``n`` word / non-word pairs, one per vocabulary word (3 letters or more, names
    left out: they are no lexical words), in a seeded order; fewer if the vocabulary runs out."""
    lexicon = english_lexicon()
    trigrams = set().union(*(_trigrams(w) for w in lexicon if w.isalpha()))
    vocab = set(vocabulary("en"))
    words = sorted(w.lower() for w in vocab if len(w) >= 3 and w not in _NAMES)
    random.Random(f"{seed}-lexical").shuffle(words)
    pairs = []
    for word in words:
        if len(pairs) == n:
            break
        k = len(pairs)
        spk = speakers[k % len(speakers)]
        bad = nonword(word, spk, random.Random(f"{seed}-lexical-{word}"), lexicon, trigrams, vocab)
        if bad is not None:
            pairs.append(Pair(f"lexical-{k:04d}", "lexical", "word_nonword", spk.id, word.upper(), bad.upper()))
    if len(pairs) < n:
        logging.warning(f"lexical: {len(pairs)} pairs (asked for {n}): the vocabulary ran out")
    return pairs


def make_pairs(num_pairs: int = 300, seed: int = 0, exclude: Optional[Set[str]] = None,
               tasks: Sequence[str] = TASKS) -> List[Pair]:
    """The pairs of ``tasks`` (``num_pairs`` each), spoken by the mini corpus's unseen test
    speakers; ``exclude``: sentences no good member may be (default: the training splits')."""
    from icefall.data.corpus import make_speakers

    _, speakers = make_speakers("en", 0)
    exclude = training_sentences() if exclude is None else exclude
    pairs = []
    for task in tasks:
        if task == "lexical":
            pairs += lexical_pairs(num_pairs, speakers, seed)
        elif task == "syntactic":
            pairs += syntactic_pairs(num_pairs, speakers, seed, exclude)
        elif task == "story":
            pairs += story_pairs(num_pairs, speakers, seed, exclude)
        else:
            raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    return pairs


# ----------------------------------------------------------------------------- audio
def _speak(text: str, speaker: Speaker) -> np.ndarray:
    return synthesize(text, speaker, EDGE_SILENCE, EDGE_SILENCE).audio


def _synth_pairs(jobs: List[Tuple[Pair, Speaker, str, str]]) -> List[Tuple[int, int]]:
    """Shard worker: writes both members of each pair; returns their sample counts."""
    from icefall.data.corpus import _write_flac

    out = []
    for pair, speaker, good_path, bad_path in jobs:
        head = []
        if pair.prefix:  # spoken once, so that both members share the very same samples
            head = [_speak(pair.prefix, speaker), np.zeros(int(STORY_GAP * SAMPLE_RATE), np.float32)]
        counts = []
        for body, path in ((pair.good, good_path), (pair.bad, bad_path)):
            audio = np.concatenate(head + [_speak(body, speaker)])
            _write_flac(Path(path), audio)
            counts.append(len(audio))
        out.append(tuple(counts))
    return out


def build_benchmarks(out_dir: Path, num_pairs: int = 300, seed: int = 0, num_workers: int = 2,
                     tasks: Sequence[str] = TASKS, exclude: Optional[Set[str]] = None) -> Path:
    """Texts, audio and manifests of the benchmarks (layout: module docstring); returns the
    path of ``pairs.jsonl``. Written atomically: ``pairs.jsonl`` appears last."""
    from lhotse import AudioSource, Recording, SupervisionSegment

    from icefall.data.corpus import _synth_all, _write_jsonl_gz, make_speakers, manifest_paths
    from icefall.utils import atomic_write_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = make_pairs(num_pairs, seed, exclude, tasks)
    _, test_speakers = make_speakers("en", 0)
    by_id = {s.id: s for s in test_speakers}
    paths = {(p.id, m): out_dir / "audio" / p.task / f"{p.member_id(m)}.flac" for p in pairs for m in MEMBERS}
    jobs = [(p, by_id[p.speaker], str(paths[p.id, "good"]), str(paths[p.id, "bad"])) for p in pairs]
    counts = _synth_all(jobs, num_workers, shard_fn=_synth_pairs)
    recs, sups = [], []
    for p, n in zip(pairs, counts):
        for m, num in zip(MEMBERS, n):
            i, duration = p.member_id(m), num / SAMPLE_RATE
            recs.append(Recording(id=i, sampling_rate=SAMPLE_RATE, num_samples=num, duration=duration, sources=[
                AudioSource(type="file", channels=[0], source=str(paths[p.id, m]))]).to_dict())
            sups.append(SupervisionSegment(id=i, recording_id=i, start=0.0, duration=duration, channel=0,
                                           text=p.text(m), speaker=p.speaker, language="en").to_dict())
    manifests = manifest_paths(out_dir, SPLIT)
    _write_jsonl_gz(recs, manifests["recordings"])
    _write_jsonl_gz(sups, manifests["supervisions"])
    pairs_path = out_dir / "pairs.jsonl"
    tmp = atomic_write_path(pairs_path)
    tmp.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs), encoding="utf-8")
    tmp.replace(pairs_path)
    logging.info(f"{len(pairs)} pairs -> {pairs_path}")
    return pairs_path


def read_pairs(path: Path) -> List[Pair]:
    """``pairs.jsonl`` -> pairs; a bad line raises ValueError naming the file and line."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                pairs.append(Pair(**json.loads(line)))
            except (TypeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}:{n}: not a benchmark pair: {e}") from None
    return pairs


# ----------------------------------------------------------------------------- scoring
def wilson_interval(correct: float, n: int, z: float = 1.96) -> Tuple[float, float]:
    """95% Wilson score interval of an accuracy of ``correct`` out of ``n``."""
    if n == 0:
        return float("nan"), float("nan")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def pair_accuracy(pairs: Iterable[Pair], scores: Mapping[str, float]) -> Dict[str, Dict[str, float]]:
    """Per task and per ``task/phenomenon``: {"accuracy", "n", "ci_low", "ci_high"}; a pair is
    right when ``scores[good member id] > scores[bad member id]`` (a tie: one half)."""
    groups: Dict[str, List[float]] = {}
    for p in pairs:
        g, b = scores[p.member_id("good")], scores[p.member_id("bad")]
        right = 1.0 if g > b else 0.5 if g == b else 0.0
        for key in (p.task, f"{p.task}/{p.phenomenon}"):
            groups.setdefault(key, []).append(right)
    out = {}
    for key, v in sorted(groups.items()):
        lo, hi = wilson_interval(sum(v), len(v))
        out[key] = {"accuracy": sum(v) / len(v), "n": len(v), "ci_low": lo, "ci_high": hi}
    return out


def member_scores(lm, pairs: Sequence[Pair], units: Mapping[str, Sequence[int]],
                  batch_size: int = 32, normalize: bool = False) -> Dict[str, float]:
    """{member id: log-probability} of every member of ``pairs`` under a unit LM
    (``icefall.slm.lm.UnitLM.score``), from the members' (deduplicated) units."""
    ids = sorted({p.member_id(m) for p in pairs for m in MEMBERS})
    missing = [i for i in ids if i not in units]
    if missing:
        raise ValueError(f"no units for {len(missing)} members, e.g. {missing[:3]}")
    return dict(zip(ids, lm.score([units[i] for i in ids], batch_size, normalize).tolist()))


def score_pairs(lm, pairs: Sequence[Pair], units: Mapping[str, Sequence[int]],
                batch_size: int = 32) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Accuracies of a unit LM on the pairs (:func:`pair_accuracy`), twice: ``"summed"``
    log-probabilities, and ``"normalized"`` by the number of predicted tokens (units + EOS), the
    choice of ZeroSpeech 2021 for sWUGGY and of SpidR (section 4.4) for every task."""
    return {kind: pair_accuracy(pairs, member_scores(lm, pairs, units, batch_size, kind == "normalized"))
            for kind in ("summed", "normalized")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--num-pairs", type=int, default=300, help="pairs per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    args = p.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    build_benchmarks(args.out_dir, args.num_pairs, args.seed, args.num_workers, args.tasks)


if __name__ == "__main__":
    main()
