"""The espeak-ng synthesizer, the sentence generator and the mini corpus writer."""
import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from icefall.data import corpus as corpus_mod
from icefall.data.corpus import (SIZES, check_alignment, make_speakers, synthesize_corpus,
                                 validate_corpus, write_librispeech_tree)
from icefall.data.synth import SAMPLE_RATE, SIL, AugmentConfig, Speaker, augment, synthesize
from icefall.data.text import generate_sentence, vocabulary

EN = Speaker(id="t1", lang="en", voice="en-us", variant="m3", rate=170, pitch=50)
VI = Speaker(id="t2", lang="vi", voice="vi", variant="f2", rate=150, pitch=50)


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_sizes():
    """Shrink the tiny corpus further for these tests (restored afterwards)."""
    old = dict(SIZES["tiny"])
    SIZES["tiny"].update({"train-unlabeled": 6, "train-labeled": 3, "dev": 3, "test": 3})
    yield
    SIZES["tiny"].update(old)


def test_generator_vocabulary_and_determinism():
    en = vocabulary("en")
    assert len(en) >= 300 and len(vocabulary("vi")) >= 150
    a = [generate_sentence(random.Random(7)) for _ in range(3)]
    b = [generate_sentence(random.Random(7)) for _ in range(3)]
    assert a == b
    rng = random.Random(0)
    sentences = [generate_sentence(rng) for _ in range(500)]
    assert len(set(sentences)) > 490  # a real task: hardly any repeats
    used = {w for s in sentences for w in s.split()}
    assert used <= set(en) and len(used) > 250
    vi = generate_sentence(random.Random(1), "vi")
    assert set(vi.split()) <= set(vocabulary("vi"))


@pytest.mark.parametrize("speaker", [EN, VI])
def test_alignments_tile_and_follow_the_audio(speaker):
    text = generate_sentence(random.Random(3), speaker.lang)
    utt = synthesize(text, speaker, lead_silence=0.2, trail_silence=0.3)
    d = utt.duration
    # Phones tile [0, duration]; words are ordered, inside, and match the transcript.
    assert utt.phones[0][1] == 0.0 and abs(utt.phones[-1][2] - d) < 1e-4
    for (_, _, e), (_, s, _) in zip(utt.phones[:-1], utt.phones[1:]):
        assert e == s
    assert all(e > s for _, s, e in utt.phones)
    assert [w for w, _, _ in utt.words] == text.split()
    for (_, s1, e1), (_, s2, e2) in zip(utt.words[:-1], utt.words[1:]):
        assert s1 < e1 <= s2 < e2
    # Plausible durations: speech phones 10..400 ms, words 60 ms..1.5 s, and the speaking rate
    # within a factor 2 of the requested words per minute.
    assert all(0.01 <= e - s <= 0.4 for p, s, e in utt.phones if p != SIL)
    assert all(0.06 <= e - s <= 1.5 for _, s, e in utt.words)
    speech = utt.words[-1][2] - utt.words[0][1]
    wpm = len(utt.words) / speech * 60
    assert speaker.rate / 2 < wpm < speaker.rate * 2
    # Independent check against the signal: the added lead silence is exactly zero and lies
    # before the first word; the audio inside words is loud.
    assert utt.words[0][1] >= 0.2 - 1e-3
    lead = utt.audio[: int(0.2 * SAMPLE_RATE)]
    assert np.abs(lead).max() < 1e-3
    for _, s, e in utt.words:
        seg = utt.audio[int(s * SAMPLE_RATE): int(e * SAMPLE_RATE)]
        assert np.sqrt(np.mean(seg**2)) > 0.01
    # Long alignment-internal silences are quiet too (espeak pauses are silence).
    for p, s, e in utt.phones[1:-1]:
        if p == SIL and e - s > 0.1:
            seg = utt.audio[int((s + 0.02) * SAMPLE_RATE): int((e - 0.02) * SAMPLE_RATE)]
            assert np.sqrt(np.mean(seg**2)) < 0.01


def test_merged_word_pairs_get_their_own_alignment():
    # espeak speaks "in the" as one word (one event); "THE" must still be aligned.
    utt = synthesize("SHE SAT IN THE GARDEN", EN)
    words = dict((w, (s, e)) for w, s, e in utt.words)
    assert words["IN"][1] <= words["THE"][0] < words["THE"][1] <= words["GARDEN"][0]


def test_speakers_differ_and_test_speakers_are_unseen():
    train, test = make_speakers("en", 0)
    assert len({(s.voice, s.variant, s.rate, s.pitch) for s in train}) == len(train)
    assert not {s.variant for s in train} & {s.variant for s in test}
    text = "THE OLD DOG SAW ALICE"
    a, b = synthesize(text, train[0]), synthesize(text, train[1])
    assert a.audio.shape != b.audio.shape or not np.allclose(a.audio, b.audio)


def test_augment_hits_the_requested_snr_and_is_seeded():
    x = 0.1 * np.sin(2 * np.pi * 440 * np.arange(16000) / SAMPLE_RATE).astype(np.float32)
    cfg = AugmentConfig(noise_prob=1.0, snr_db=(20.0, 20.0), reverb_prob=0.0)
    y = augment(x, np.random.default_rng(5), cfg)
    assert np.array_equal(y, augment(x, np.random.default_rng(5), cfg))
    assert not np.array_equal(y, augment(x, np.random.default_rng(6), cfg))
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((y - x).astype(np.float64) ** 2))
    assert abs(snr - 20.0) < 0.1
    # Reverb keeps the length and adds a decaying tail after a click.
    click = np.zeros(8000, np.float32)
    click[100] = 0.5
    r = augment(click, np.random.default_rng(1), AugmentConfig(noise_prob=0.0, reverb_prob=1.0))
    assert r.shape == click.shape and np.abs(r[2000:]).max() < np.abs(r[101:1000]).max()


def test_corpus_is_deterministic_valid_and_has_unseen_test_speakers(tmp_path, small_sizes,
                                                                   monkeypatch):
    runs = []
    for k, workers in enumerate([1, 2]):
        out = tmp_path / f"run{k}"
        out.mkdir()
        monkeypatch.chdir(out)  # relative audio paths in the manifests, as prepare.sh makes
        # Speak something first: the corpus must not depend on this process's espeak state.
        synthesize("HELLO " * k + "THERE", EN)
        stats = synthesize_corpus(Path("audio"), Path("manifests"), size="tiny", seed=3,
                                  num_workers=workers)
        runs.append(_tree_digest(out))
    assert runs[0] == runs[1] and len(runs[0]) == 15 + 4 * 3 + 1  # audio + manifests + tsv
    synthesize_corpus(Path("seed4/audio"), Path("seed4/manifests"), size="tiny", seed=4,
                      num_workers=1)
    assert _tree_digest(tmp_path / "run1" / "seed4") != runs[0]
    monkeypatch.chdir(tmp_path / "run0")

    assert {s: v["utterances"] for s, v in stats.items()} == \
        {"train-unlabeled": 6, "train-labeled": 3, "dev": 3, "test": 3}
    validated = validate_corpus(Path("manifests"), read_data=True)
    assert validated["test"]["utterances"] == 3

    from lhotse import load_manifest
    m = Path("manifests")
    sups = {s: load_manifest(m / f"mini_supervisions_{s}.jsonl.gz") for s in corpus_mod.SPLITS}
    train_spk = {x.speaker for s in ("train-unlabeled", "train-labeled", "dev") for x in sups[s]}
    assert not train_spk & {x.speaker for x in sups["test"]}
    # The phone text file says the same as the supervisions.
    lines = (m / "mini_phones_dev.txt").read_text(encoding="utf-8").splitlines()
    expected = [f"{s.id} {p.start:.4f} {p.start + p.duration:.4f} {p.symbol}"
                for s in sups["dev"] for p in s.alignment["phone"]]
    assert len(lines) == len(expected)
    for got, exp in zip(lines, expected):
        g, e = got.split(), exp.split()
        assert g[0] == e[0] and g[3] == e[3]
        assert abs(float(g[1]) - float(e[1])) < 2e-4 and abs(float(g[2]) - float(e[2])) < 2e-4
    # Audio files are 16 kHz and as long as the manifest says.
    for rec in load_manifest(m / "mini_recordings_dev.jsonl.gz"):
        info = sf.info(rec.sources[0].source)
        assert info.samplerate == 16000 and info.frames == rec.num_samples

    # check_alignment rejects a broken alignment (gap between phones).
    sup = sups["dev"][0]
    phones = list(sup.alignment["phone"])
    phones[1] = phones[1].with_offset(0.01)
    with pytest.raises(ValueError, match=sup.id):
        check_alignment(sup.with_alignment("phone", phones))


def test_librispeech_fixture_layout(tmp_path):
    base = write_librispeech_tree(tmp_path, {"train-clean-5": 3, "dev-clean-2": 2}, seed=1)
    flacs = sorted(base.rglob("*.flac"))
    assert len(flacs) == 5
    for f in flacs:
        spk, chapter, _ = f.stem.split("-")
        assert f.parent.name == chapter and f.parent.parent.name == spk
        assert f.parent.parent.parent.parent == base
        trans = f.parent / f"{spk}-{chapter}.trans.txt"
        ids = [line.split(" ", 1)[0] for line in trans.read_text().splitlines()]
        assert f.stem in ids
        assert sf.info(str(f)).samplerate == 16000
