"""WER alignment/counts on hand cases, icefall-style files, MAPSSWE."""
import random

import pytest
from scipy.stats import norm

from icefall.eval.mapsswe import mapsswe, segment_errors
from icefall.eval.wer import EPS, align, compute_wer, save_results, write_error_stats


def edit_distance(a, b):
    """Textbook recursive definition (memoised), the reference for align()."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j - 1) + (a[i - 1] != b[j - 1]), d(i - 1, j) + 1, d(i, j - 1) + 1)

    return d(len(a), len(b))


def test_align_hand_cases():
    assert align("a b c d".split(), "a x c d e".split()) == [
        ("a", "a"), ("b", "x"), ("c", "c"), ("d", "d"), (EPS, "e")]
    assert align("a b c".split(), "a c".split()) == [("a", "a"), ("b", EPS), ("c", "c")]
    assert align([], ["x"]) == [(EPS, "x")]
    assert align(["x"], []) == [("x", EPS)]


def test_alignment_cost_is_the_edit_distance():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 6))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 6))]
        ali = align(a, b)
        assert [r for r, _ in ali if r != EPS] == a and [h for _, h in ali if h != EPS] == b
        assert sum(r != h for r, h in ali) == edit_distance(tuple(a), tuple(b))


def test_error_split_is_kaldis():
    """Ties between equal-cost alignments are broken as Kaldi does (kaldialign's C++ edit
    distance counts them independently of the alignment we score with): e.g. "a b" -> "b c" is
    one deletion and one insertion, not two substitutions."""
    import kaldialign

    assert align(["a", "b"], ["b", "c"]) == [("a", EPS), ("b", "b"), (EPS, "c")]
    rng = random.Random(1)
    for i in range(500):
        ref = [rng.choice("abcd") for _ in range(rng.randint(0, 8))]
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 8))]
        s = compute_wer([(str(i), ref, hyp)])
        kaldi = kaldialign.edit_distance(ref, hyp)
        assert (s.ins, s.dels, s.subs) == (kaldi["ins"], kaldi["del"], kaldi["sub"]), (ref, hyp)


def test_wer_counts():
    results = [
        ("u1", "the cat sat on the mat".split(), "the cat sat on mat".split()),  # 1 del
        ("u2", "hello world".split(), "hello big word".split()),  # 1 ins + 1 sub
        ("u3", "a b".split(), "a b".split()),
    ]
    s = compute_wer(results)
    assert (s.ins, s.dels, s.subs, s.corr, s.ref_len) == (1, 1, 1, 8, 10)
    assert s.wer == pytest.approx(30.0)


def test_icefall_files(tmp_path):
    results = [
        ("u2", "hello world".split(), "hello big word".split()),
        ("u1", "the cat sat".split(), "the cat sat".split()),
    ]
    wers = save_results(tmp_path, "test-clean", {"greedy_search": results}, enable_log=False)
    assert wers == {"greedy_search": 40.0}
    recogs = (tmp_path / "recogs-test-clean-greedy_search.txt").read_text().splitlines()
    assert recogs[0] == "u1:\tref=['the', 'cat', 'sat']"
    assert recogs[3] == "u2:\thyp=['hello', 'big', 'word']"
    errs = (tmp_path / "errs-test-clean-greedy_search.txt").read_text()
    lines = errs.splitlines()
    assert lines[0] == "%WER = 40.00"
    assert lines[1] == ("Errors: 1 insertions, 0 deletions, 1 substitutions, over 5 reference "
                        "words (4 correct)")
    assert "u2:\thello (world->big word)" in errs  # adjacent errors shown together
    assert "u1:\tthe cat sat" in errs
    sub = lines[lines.index("SUBSTITUTIONS: count ref -> hyp") + 1]
    assert sub == "1   world -> big"  # Kaldi's tie-break (kaldialign), as icefall's files show
    per_word = lines[lines.index("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp") + 1:]
    assert "hello   1 0 1 1" in per_word
    summary = (tmp_path / "wer-summary-test-clean-greedy_search.txt").read_text().splitlines()
    assert summary == ["settings\tWER", "greedy_search\t40.0"]


def test_cer():
    import io

    f = io.StringIO()
    wer = write_error_stats(f, "x", [("u", ["ab", "c"], ["ab", "d"])], enable_log=False, compute_CER=True)
    assert wer == pytest.approx(100 / 3, abs=0.01)


def test_mapsswe_segments_hand_case():
    ref = "a b c d e f".split()
    hyp_a = "a x c d e f".split()  # b substituted
    hyp_b = "a b c y e".split()  # d substituted, f deleted
    assert segment_errors(ref, hyp_a, hyp_b) == [(1, 0), (0, 1), (0, 1)]
    # an insertion before a word makes that word a non-boundary
    assert segment_errors("a b".split(), "a z b".split(), "a b".split()) == [(1, 0)]


def test_mapsswe_statistic_by_hand():
    ref = "a b c d e f".split()
    res = mapsswe([("u", ref, "a x c d e f".split())], [("u", ref, "a b c y e".split())])
    # differences 1, -1, -1: mean -1/3, sample sd 2/sqrt(3), W = mean / (sd / sqrt(3)) = -0.5
    assert res.num_segments == 3 and res.errors_a == 1 and res.errors_b == 2
    assert res.z == pytest.approx(-0.5)
    assert res.p_value == pytest.approx(2 * norm.sf(0.5))


def test_mapsswe_identical_and_different_systems():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(30)]
    refs = [[rng.choice(vocab) for _ in range(12)] for _ in range(60)]
    sys_a = [(f"u{i}", r, list(r)) for i, r in enumerate(refs)]
    same = mapsswe(sys_a, sys_a)
    assert same.p_value == 1.0 and same.errors_a == same.errors_b == 0

    def corrupt(words, n):
        words = list(words)
        for i in rng.sample(range(len(words)), n):
            words[i] = "oops"
        return words

    slightly = [(c, r, corrupt(r, 1) if i % 2 else list(r)) for i, (c, r, _) in enumerate(sys_a)]
    much = [(c, r, corrupt(r, 3)) for c, r, _ in slightly]
    res = mapsswe(slightly, much)
    assert res.errors_b > res.errors_a and res.p_value < 0.05 and res.z < 0
    # a symmetric test: swapping the systems only flips the sign
    swapped = mapsswe(much, slightly)
    assert swapped.z == pytest.approx(-res.z) and swapped.p_value == pytest.approx(res.p_value)
    # two systems that differ by noise only: not significant
    noise_a = [(c, r, corrupt(r, 1)) for c, r, _ in sys_a]
    noise_b = [(c, r, corrupt(r, 1)) for c, r, _ in sys_a]
    assert mapsswe(noise_a, noise_b).p_value > 0.05


def test_read_transcripts_round_trip_and_cer(tmp_path):
    from icefall.eval.wer import compute_cer, read_transcripts, store_transcripts

    results = [("u2", ["HELLO", "WORLD"], ["HELO", "WORLD"]), ("u1", ["A", "B'S"], [])]
    store_transcripts(tmp_path / "recogs-test.txt", results)
    assert read_transcripts(tmp_path / "recogs-test.txt") == results
    # "HELLO WORLD" (11 characters) vs "HELO WORLD": one deletion; "A B'S" (5) vs "": 5 deletions
    stats = compute_cer(results)
    assert (stats.dels, stats.subs, stats.ins, stats.ref_len) == (6, 0, 0, 16)
