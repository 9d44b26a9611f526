"""Zero-shot benchmarks: seeded, minimal pairs, no training sentence, audio and scoring."""
import random

import numpy as np
import pytest
import torch

from icefall.data.text import vocabulary
from icefall.slm.benchmarks import (SYNTAX_PHENOMENA, Pair, _VERBS, build_benchmarks, make_pairs, nouns_of,
                                    pair_accuracy, read_pairs, score_pairs, training_sentences,
                                    wilson_interval)


@pytest.fixture(scope="module")
def train_sentences():
    return training_sentences()


@pytest.fixture(scope="module")
def sentence_pairs(train_sentences):
    return make_pairs(200, seed=0, exclude=train_sentences, tasks=["syntactic", "story"])


def diff_positions(a, b):
    a, b = a.split(), b.split()
    assert len(a) == len(b)
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


def test_pairs_are_seeded(sentence_pairs, train_sentences):
    assert make_pairs(200, seed=0, exclude=train_sentences, tasks=["syntactic", "story"]) == sentence_pairs
    other = make_pairs(200, seed=1, exclude=train_sentences, tasks=["syntactic", "story"])
    assert [p.good for p in other] != [p.good for p in sentence_pairs]


def test_syntactic_pairs_differ_only_where_intended(sentence_pairs):
    syn = [p for p in sentence_pairs if p.task == "syntactic"]
    assert len(syn) == 200 and {p.phenomenon for p in syn} == set(SYNTAX_PHENOMENA)
    for p in syn:
        d, g, b = diff_positions(p.good, p.bad), p.good.split(), p.bad.split()
        if p.phenomenon == "word_order":
            assert len(d) == 2 and d[1] == d[0] + 1 and g[d[0]] == b[d[1]] and g[d[1]] == b[d[0]], p
        else:
            assert len(d) == 1, p
            i = d[0]
            if p.phenomenon == "subject_verb_agreement":
                forms = _VERBS[g[i]][0]
                assert {g[i], b[i]} == {forms[0], forms[1]}, p
            elif p.phenomenon == "determiner_noun_agreement":
                assert {g[i], b[i]} in ({"THIS", "THESE"}, {"THAT", "THOSE"}), p
            else:  # argument structure: transitive verb -> intransitive of the same form
                assert _VERBS[g[i]][2] and not _VERBS[b[i]][2] and _VERBS[g[i]][1] == _VERBS[b[i]][1], p


def test_story_pairs_are_counterbalanced_twins(sentence_pairs):
    story = [p for p in sentence_pairs if p.task == "story"]
    assert len(story) == 200
    for a, b in zip(story[::2], story[1::2]):
        # continuations differ in the subject noun only; the twin swaps them
        assert diff_positions(a.good, a.bad) == [1] and (a.good, a.bad) == (b.bad, b.good)
        assert a.speaker == b.speaker and a.prefix != b.prefix
        x, y = a.good.split()[1], a.bad.split()[1]
        # each first sentence names its own noun (as its subject) and not the other one
        assert x in nouns_of(a.prefix) and y not in nouns_of(a.prefix)
        assert y in nouns_of(b.prefix) and x not in nouns_of(b.prefix)
        assert not nouns_of(" ".join(a.good.split()[2:])) & (nouns_of(a.prefix) | nouns_of(b.prefix))


def test_no_good_member_is_a_training_sentence(sentence_pairs, train_sentences):
    for p in sentence_pairs:
        for s in (p.good, p.bad, p.prefix):
            assert s not in train_sentences, p
    # and the exclusion is what keeps them out: excluding the sentences drawn now changes them
    drawn = {p.good for p in sentence_pairs if p.task == "syntactic"}
    again = make_pairs(200, seed=0, exclude=train_sentences | drawn, tasks=["syntactic"])
    assert not drawn & {p.good for p in again}


def test_training_sentences_cover_the_corpus_texts():
    from icefall.data.corpus import plan_corpus, utterance_text

    spec = plan_corpus("full")["train-unlabeled"][7]
    sents = training_sentences()
    assert utterance_text(spec, 0)[0] in sents and len(sents) > 40000


def test_lexical_pairs_are_matched_nonwords():
    pytest.importorskip("english_words")
    pairs = make_pairs(30, seed=0, exclude=set(), tasks=["lexical"])
    vocab = set(vocabulary("en"))
    assert len(pairs) == 30
    for p in pairs:
        assert p.good in vocab and p.bad not in vocab and len(p.good) == len(p.bad)
        d = [i for i, (x, y) in enumerate(zip(p.good, p.bad)) if x != y]
        assert len(d) == 1
        assert (p.good[d[0]] in "AEIOU") == (p.bad[d[0]] in "AEIOU"), p


def test_build_writes_deterministic_audio(tmp_path):
    pytest.importorskip("english_words")
    import soundfile as sf
    from lhotse import load_manifest

    outs = [build_benchmarks(tmp_path / f"b{k}", num_pairs=2, num_workers=k + 1, exclude=set()) for k in range(2)]
    pairs = read_pairs(outs[0])
    assert pairs == read_pairs(outs[1]) and len(pairs) == 6
    recs = load_manifest(tmp_path / "b0" / "mini_recordings_bench.jsonl.gz")
    sups = load_manifest(tmp_path / "b0" / "mini_supervisions_bench.jsonl.gz")
    assert sorted(recs.ids) == sorted(p.member_id(m) for p in pairs for m in ("good", "bad"))
    assert {s.id: s.text for s in sups}[pairs[-1].member_id("bad")] == pairs[-1].prefix + " " + pairs[-1].bad
    for p in pairs:
        a = {m: sf.read(tmp_path / "b0" / "audio" / p.task / f"{p.member_id(m)}.flac")[0] for m in ("good", "bad")}
        b = sf.read(tmp_path / "b1" / "audio" / p.task / f"{p.id}-good.flac")[0]
        assert np.array_equal(a["good"], b)
        if p.task == "story":  # the first sentence is the very same audio in both members
            n = min(len(a["good"]), len(a["bad"])) // 3
            assert np.array_equal(a["good"][:n], a["bad"][:n])


def test_read_pairs_names_bad_line(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"id": "x"}\n')
    with pytest.raises(ValueError, match="pairs.jsonl:1"):
        read_pairs(f)


def test_pair_accuracy_and_interval():
    pairs = [Pair(f"p{i}", "syntactic", "word_order", "s", "A B", "B A") for i in range(4)]
    scores = {"p0-good": 1, "p0-bad": 0, "p1-good": 0, "p1-bad": 1, "p2-good": 2, "p2-bad": 2,
              "p3-good": 5, "p3-bad": -1}
    acc = pair_accuracy(pairs, scores)
    assert acc["syntactic"]["accuracy"] == pytest.approx(2.5 / 4)
    assert acc["syntactic/word_order"]["n"] == 4
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_score_pairs_compares_lm_log_probs():
    from icefall.slm.lm import UnitLM, UnitLMConfig

    torch.manual_seed(0)
    lm = UnitLM(UnitLMConfig(num_units=6, num_layers=1, dim=16, num_heads=2, ffn_dim=32, max_len=32))
    rng = random.Random(0)
    pairs = [Pair(f"w{i}", "lexical", "word_nonword", "s", "AB", "AC") for i in range(20)]
    units = {p.member_id(m): [rng.randrange(6) for _ in range(rng.randrange(1, 9))] for p in pairs for m in ("good", "bad")}
    out = score_pairs(lm, pairs, units, batch_size=7)
    s = {k: float(lm.score([v])[0]) for k, v in units.items()}
    n = {k: s[k] / (len(v) + 1) for k, v in units.items()}
    assert out["summed"]["lexical"]["accuracy"] == pytest.approx(np.mean([s[f"w{i}-good"] > s[f"w{i}-bad"] for i in range(20)]))
    assert out["normalized"]["lexical"]["accuracy"] == pytest.approx(np.mean([n[f"w{i}-good"] > n[f"w{i}-bad"] for i in range(20)]))
    assert out["summed"]["lexical"]["accuracy"] != out["normalized"]["lexical"]["accuracy"]
    with pytest.raises(ValueError, match="no units"):
        score_pairs(lm, pairs, {})


def test_story_twins_give_a_context_blind_scorer_exactly_chance(sentence_pairs):
    import zlib

    story = [p for p in sentence_pairs if p.task == "story"]

    def blind(text):  # any score that adds a prefix part and a continuation part
        return zlib.crc32(text.encode()) % 1000

    scores = {p.member_id(m): blind(p.prefix) + blind(p.good if m == "good" else p.bad)
              for p in story for m in ("good", "bad")}
    assert pair_accuracy(story, scores)["story"]["accuracy"] == 0.5
