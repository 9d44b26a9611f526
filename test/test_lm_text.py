"""LM text and LM preparation stages: the mini corpus's generator text (own seed, no dev/test
sentence), egs/mini/SSL/prepare.sh stage 6, egs/librispeech/SSL/prepare.sh stage 7 (openslr 11
files, downloads skipped when present) on fixtures."""
import gzip
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from icefall.asr.lm import build_arpa, read_lexicon
from icefall.data.lm_text import download_librispeech_lm, generate_lm_text, write_lm_text
from icefall.data.text import generate_sentence, vocabulary
from icefall.data.tokenizer import make_char_lang, train_bpe

ROOT = Path(__file__).resolve().parents[1]


def _run(script, cwd, *args):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(["bash", str(ROOT / "egs" / script / "SSL" / "prepare.sh"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _supervisions(path: Path, texts):
    from lhotse import SupervisionSegment, SupervisionSet

    path.parent.mkdir(parents=True, exist_ok=True)
    SupervisionSet.from_segments([
        SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0.0, duration=1.0, text=t)
        for i, t in enumerate(texts)]).to_file(path)


def test_generator_text_is_seeded_and_leaves_out_excluded_sentences():
    first = generate_lm_text(300, seed=0)
    assert first == generate_lm_text(300, seed=0) and first != generate_lm_text(300, seed=1)
    # its own seed stream: not the sentences of the audio corpus's utterances (seed-id-attempt)
    corpus = {generate_sentence(random.Random(f"0-spk{i}-0")) for i in range(300)}
    assert corpus.isdisjoint(first[:50])
    excluded = set(first[:40:2])
    again = generate_lm_text(300, seed=0, exclude=excluded)
    assert len(again) == 300 and excluded.isdisjoint(again)
    assert [s for s in first if s not in excluded] == again[:280]  # the rest, in order
    assert {w for s in first for w in s.split()} <= set(vocabulary("en"))


def test_write_lm_text(tmp_path):
    write_lm_text(["B A", "C A"], tmp_path)
    assert (tmp_path / "text.txt").read_text() == "B A\nC A\n"
    assert (tmp_path / "words.txt").read_text() == "A\nB\nC\n"


def test_mini_prepare_lm_stage(tmp_path):
    """Dev and test sentences drawn from the LM seed stream itself, so leaving them out has
    work to do; lexicons for the letter and BPE lang dirs; an ARPA LM KenLM loads."""
    stream = generate_lm_text(60, seed=0)
    dev, test = stream[:30:3], stream[1:30:3]
    man = tmp_path / "data" / "manifests"
    _supervisions(man / "mini_supervisions_dev.jsonl.gz", dev)
    _supervisions(man / "mini_supervisions_test.jsonl.gz", test)
    letters = make_char_lang(vocabulary("en"), tmp_path / "data" / "lang_char")
    train_bpe(generate_lm_text(500, seed=9), tmp_path / "data" / "lang_bpe_64", vocab_size=64)
    r = _run("mini", tmp_path, "--tiny", "--stage", "6", "--stop-stage", "6")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lm = tmp_path / "data" / "lm"
    text = (lm / "text.txt").read_text().splitlines()
    assert len(text) == 2000 and not (set(dev) | set(test)) & set(text)
    assert text[:20] == [s for s in stream if s not in set(dev) | set(test)][:20]
    words = (lm / "words.txt").read_text().split()
    assert words == sorted({w for s in text for w in s.split()})
    for d in ("lang_char", "lang_bpe_64"):
        assert sorted(read_lexicon(tmp_path / "data" / d / "lexicon.txt")) == words
    assert read_lexicon(letters / "lexicon.txt")["CAT"] == [["C", "A", "T"]]
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    from icefall.asr.lm_decode import load_lexicon_decoder

    assert load_lexicon_decoder(letters, lm=lm / "3gram.arpa").words.entry_size() == len(words) + 1
    again = _run("mini", tmp_path, "--tiny", "--stage", "6", "--stop-stage", "6")
    assert (tmp_path / "data" / "lang_bpe_64" / "token-4gram.arpa").is_file()
    assert again.returncode == 0 and again.stdout.count("done before") == 5


def _fake_openslr_11(d: Path) -> dict:
    """Tiny stand-ins of the openslr 11 files; returns {name: bytes}."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "text.txt").write_text("THE CAT SAT\nA DOG SAT\nTHE DOG'S CAT\n" * 4)
    files = {}
    for n in (3, 4):
        arpa = build_arpa(d / "text.txt", d / f"{n}.arpa", order=n)
        files[f"{n}-gram.arpa.gz"] = gzip.compress(arpa.read_bytes())
    files["librispeech-lm-norm.txt.gz"] = gzip.compress((d / "text.txt").read_bytes())
    files["librispeech-vocab.txt"] = b"A\nCAT\nDOG\nDOG'S\nSAT\nTHE\n"
    files["librispeech-lexicon.txt"] = b"A\tAH0\nCAT\tK AE1 T\n"
    for name, data in files.items():
        (d / name).write_bytes(data)
    return files


def test_librispeech_lm_stage_downloads_then_skips(tmp_path):
    server = tmp_path / "openslr"
    files = _fake_openslr_11(server)
    work = tmp_path / "work"
    texts = ["THE CAT SAT", "A DOG SAT"] * 10  # no apostrophe: DOG'S cannot be spelled
    make_char_lang(texts, work / "data" / "lang_char")
    train_bpe(texts, work / "data" / "lang_bpe_20", vocab_size=20)
    args = ("--stage", "7", "--stop-stage", "7", "--bpe-vocab-size", "20")
    r = _run("librispeech", work, *args, "--lm-url", server.as_uri())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name, data in files.items():
        assert (work / "download" / "lm" / name).read_bytes() == data
    for n in (3, 4):
        assert (work / "data" / "lm" / f"{n}gram.arpa").read_bytes() == gzip.decompress(files[f"{n}-gram.arpa.gz"])
    for d in ("lang_char", "lang_bpe_20"):
        assert sorted(read_lexicon(work / "data" / d / "lexicon.txt")) == ["A", "CAT", "DOG", "SAT", "THE"]
    # a second run, offline: everything is there, nothing is fetched
    r = _run("librispeech", work, *args, "--lm-url", (tmp_path / "nowhere").as_uri())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("done before") == 4 and r.stderr.count("exists") == len(files)


def test_librispeech_lm_download_failure_names_the_file(tmp_path):
    with pytest.raises(RuntimeError, match=r"3-gram.arpa.gz .*put it at .*lm/3-gram.arpa.gz"):
        download_librispeech_lm(tmp_path / "lm", url=(tmp_path / "nowhere").as_uri(),
                                files=["3-gram.arpa.gz"])
    assert list((tmp_path / "lm").iterdir()) == []  # no partial file left
