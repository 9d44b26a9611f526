"""egs/vietnamese/SSL/prepare.sh stages 0-4 on fixture trees laid out like GigaSpeech 2
Vietnamese, Common Voice Vietnamese and FLEURS Vietnamese (synthesized with espeak's Vietnamese
voices, offline): archive extraction, manifests with normalised text, fbank, the labeled subset,
token sets, idempotence, and the message when GigaSpeech 2 is missing."""
import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import scoped_tmp_dir

from icefall.data import vietnamese as vi

ROOT = Path(__file__).resolve().parents[1]
PREPARE = ROOT / "egs" / "vietnamese" / "SSL" / "prepare.sh"
GS2 = {"train": 12, "dev": 4, "test": 4}
CV = {"dev": 3, "test": 4}
FLEURS = {"dev": 3, "test": 4}
BPE = 50      # the recipe's default is 2000: impossible on a dozen sentences
HOURS = 0.002  # 7.2 s of the refined training cuts (about three of them)


def _run(cwd, *args):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(["bash", str(PREPARE), "--dl-dir", "download", "--num-jobs", "1",
                           "--bpe-vocab-size", str(BPE), "--labeled-hours", str(HOURS), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _jsonl(path: Path) -> list:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def recipe(request):
    root = scoped_tmp_dir(request, "vietnamese")
    dl = root / "download"
    gs_dir, gs_texts = vi.write_gigaspeech2_tree(dl / "gigaspeech2", GS2, seed=0)
    _, cv_texts = vi.write_commonvoice_tree(dl, CV, seed=0)
    _, fl_texts = vi.write_fleurs_tree(dl / "fleurs", FLEURS, seed=0)
    r = _run(root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root, r.stdout, {"gs": gs_texts, "cv": cv_texts, "fleurs": fl_texts}, gs_dir


def _tsv_ids(path: Path, col: int = 0) -> list:
    return [line.split("\t")[col] for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


@pytest.mark.slow
def test_manifests_have_the_right_counts_and_normalised_text(recipe):
    root, out, texts, gs_dir = recipe
    for stage in range(5):
        assert f"Stage {stage}:" in out
    assert out.count("extracting") == 4 + 2  # train/0, train/1, dev, test; FLEURS dev, test
    man, fbank = root / "data" / "manifests", root / "data" / "fbank"
    spoken = {**texts["gs"], **texts["cv"], **texts["fleurs"]}
    expected = {"gigaspeech2-train": GS2["train"], "gigaspeech2-dev": GS2["dev"],
                "gigaspeech2-test": GS2["test"], "commonvoice-dev": CV["dev"],
                "commonvoice-test": CV["test"], "fleurs-dev": FLEURS["dev"],
                "fleurs-test": FLEURS["test"]}
    for split, n in expected.items():
        recs = _jsonl(man / f"vietnamese_recordings_{split}.jsonl.gz")
        sups = _jsonl(man / f"vietnamese_supervisions_{split}.jsonl.gz")
        cuts = _jsonl(fbank / f"vietnamese_cuts_{split}.jsonl.gz")
        assert len(recs) == len(sups) == len(cuts) == n, split
        assert all(r["sampling_rate"] == 16000 for r in recs)  # CV's 48 kHz MP3 resampled
        for s in sups:
            # train_raw.tsv has an extra filler word ("ờ") the synthesizer never said
            want = spoken[s["id"]] + (" ờ" if split == "gigaspeech2-train" else "")
            assert s["text"] == want, (split, s["id"], s["custom"]["raw_text"])
        assert all(abs(c["features"]["num_frames"] - 100 * c["duration"]) <= 1 for c in cuts)
    # ids come from the corpora's own lists
    assert {s["id"] for s in _jsonl(man / "vietnamese_supervisions_gigaspeech2-dev.jsonl.gz")} \
        == set(_tsv_ids(gs_dir / "dev.tsv"))
    # raw transcripts kept as they were (NFD, quotes, a foreign word)
    cv_raw = [s["custom"]["raw_text"] for s in _jsonl(man / "vietnamese_supervisions_commonvoice-test.jsonl.gz")]
    assert any("北京" in t for t in cv_raw + [s["custom"]["raw_text"] for s in
               _jsonl(man / "vietnamese_supervisions_gigaspeech2-test.jsonl.gz")])


@pytest.mark.slow
def test_labeled_subset_and_token_sets(recipe):
    root, _, texts, gs_dir = recipe
    fbank, man = root / "data" / "fbank", root / "data" / "manifests"
    refined = set(_tsv_ids(gs_dir / "train_refined.tsv"))
    assert len(refined) == 8
    train = {c["id"]: c for c in _jsonl(fbank / "vietnamese_cuts_gigaspeech2-train.jsonl.gz")}
    sub = _jsonl(fbank / f"vietnamese_cuts_train-{HOURS:g}h.jsonl.gz")
    ids = [c["id"] for c in sub]
    assert 0 < len(ids) < len(refined) and set(ids) <= refined and len(set(ids)) == len(ids)
    d = [c["duration"] for c in sub]
    assert sum(d) >= HOURS * 3600 > sum(d) - d[-1]  # a minimal prefix of a shuffled order
    for c in sub:
        assert c["supervisions"][0]["text"] == texts["gs"][c["id"]]  # refined, not raw
        assert c["features"] == train[c["id"]]["features"]  # the training fbank, not a copy
    sups = _jsonl(man / f"vietnamese_supervisions_train-{HOURS:g}h.jsonl.gz")
    assert [s["text"] for s in sups] == [texts["gs"][i] for i in ids]

    from icefall.data.tokenizer import load_tokenizer, read_tokens

    lang_bpe, lang_char = root / "data" / f"lang_bpe_{BPE}", root / "data" / "lang_char"
    assert 10 < len(read_tokens(lang_bpe / "tokens.txt")) <= BPE
    chars = set(read_tokens(lang_char / "tokens.txt"))
    letters = {c for s in sups for c in s["text"] if c != " "}
    assert letters <= chars and letters <= vi.VI_LETTERS
    sp = load_tokenizer(lang_bpe)
    assert sp.decode(sp.encode([sups[0]["text"]])[0]) == sups[0]["text"]


@pytest.mark.slow
def test_second_run_skips_finished_stages(recipe):
    root, _, _, _ = recipe
    before = _digest(root / "data")
    r = _run(root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("extracted before") == 6
    assert r.stdout.count("done before") == 3 + 1 + 2 + 4  # stage 1 corpora, 3, 4 (x2), 5 (x4)
    assert _digest(root / "data") == before


def test_missing_gigaspeech2_fails_with_instructions(tmp_path):
    r = _run(tmp_path, "--stage", "0", "--stop-stage", "0")
    assert r.returncode == 1
    assert "huggingface-cli download speechcolab/gigaspeech2" in r.stdout
    assert "--include 'data/vi/*'" in r.stdout


@pytest.mark.slow
def test_two_iterations_of_the_loop_run_on_the_fixture(recipe):
    """iterate.sh --iter 0 (scratch ASR, decode, pseudo-labels) and --iter 1 (k-means on the
    iteration-0 encoder, pretrain, fine-tune on labeled + pseudo-labeled cuts, decode), with a
    tiny encoder and two epochs each: the wiring, not the accuracy."""
    root, _, texts, _ = recipe
    scripts = ROOT / "egs" / "vietnamese" / "SSL"
    (root / "zipformer").mkdir(exist_ok=True)
    for f in (scripts / "zipformer").glob("*.py"):
        link = root / "zipformer" / f.name
        if not link.exists():
            link.symlink_to(f)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tiny = ("--encoder zipformer-tiny --encoder-overrides frontend_layer3_channels=32 "
            "--max-duration 20 --num-workers 0 --valid-interval 1000 --save-every-n 1000")
    heads = "--decoder-dim 64 --joiner-dim 64 --max-duration 20 --num-workers 0"
    common = ["--labeled-hours", str(HOURS), "--bpe-vocab-size", str(BPE), "--ft-epochs", "2",
              "--pt-epochs", "2", "--avg", "1", "--device", "cpu", "--num-clusters", "5",
              "--layer", "4", "--kmeans-fit-hours", "1",
              "--decode-args", "--max-duration 50 --num-workers 0 --decoding-method ctc-greedy-search"]
    for args in (["--iter", "0", "--pseudo-label", "true", "--pl-threshold", "0",
                  "--finetune-args", f"{tiny} --decoder-dim 64 --joiner-dim 64"],
                 ["--iter", "1", "--use-pseudo-labels", "true", "--pretrain-args", tiny,
                  "--finetune-args", heads]):
        r = subprocess.run(["bash", str(scripts / "iterate.sh"), *common, *args], cwd=root,
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    z = root / "zipformer"
    for d in ("exp-ft-iter0", "exp-pretrain-iter1", "exp-ft-iter1"):
        assert (z / d / "epoch-2.pt").is_file(), d
    # threshold 0: every non-empty hypothesis is kept; the labeled cuts come first, unchanged
    labeled = _jsonl(root / "data" / "fbank" / f"vietnamese_cuts_train-{HOURS:g}h.jsonl.gz")
    pl = _jsonl(root / "data" / "fbank" / f"vietnamese_cuts_train-{HOURS:g}h-pl0.jsonl.gz")
    n_lab = len(labeled)
    assert [c["id"] for c in pl[:n_lab]] == [c["id"] for c in labeled]
    assert [c["supervisions"][0]["text"] for c in pl[:n_lab]] == [texts["gs"][c["id"]] for c in labeled]
    extra = pl[n_lab:]
    assert {c["id"] for c in extra} <= set(texts["gs"]) - {c["id"] for c in labeled}
    assert all(0 < c["supervisions"][0]["custom"]["confidence"] <= 1 for c in extra)
    # k-means labels at 50 Hz from the iteration-0 ASR encoder, 5 clusters
    km = _jsonl(root / "data" / "kmeans-asr0-5" / "vietnamese_cuts_gigaspeech2-train.jsonl.gz")
    assert len(km) == GS2["train"]
    for c in km:
        labels = [int(x) for x in c["custom"]["kmeans"].split()]
        assert abs(len(labels) - 50 * c["duration"]) <= 5 and 0 <= min(labels) and max(labels) < 5
    for split in ("gigaspeech2-test", "commonvoice-test", "fleurs-test"):
        assert list((z / "exp-ft-iter1" / "ctc-greedy-search").glob(f"wer-summary-{split}-*.txt")), split


def test_lm_and_lexicons_from_the_training_transcripts(recipe):
    """Stage 5: the refined training transcripts (not dev/test) -> text, words, 3-gram, lexicons."""
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    import torch

    from icefall.asr.lm import read_lexicon
    from icefall.asr.lm_decode import load_lexicon_decoder
    from icefall.data.tokenizer import read_tokens

    root, out, texts, gs_dir = recipe
    assert "Stage 5:" in out
    lm = root / "data" / "lm"
    refined = [texts["gs"][i] for i in _tsv_ids(gs_dir / "train_refined.tsv")]
    lines = (lm / "text.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(lines) == sorted(refined)
    words = (lm / "words.txt").read_text(encoding="utf-8").split()
    assert words == sorted({w for t in refined for w in t.split()})
    # the lang dirs come from the labeled subset's few transcripts: words with a letter they
    # never saw are left out of the lexicons
    letters = set(read_tokens(root / "data" / "lang_char" / "tokens.txt"))
    lexicon = read_lexicon(root / "data" / "lang_char" / "lexicon.txt")
    assert sorted(lexicon) == [w for w in words if set(w) <= letters] and len(lexicon) > len(words) / 2
    bpe_words = set(read_lexicon(root / "data" / f"lang_bpe_{BPE}" / "lexicon.txt"))
    assert bpe_words <= set(words) and len(bpe_words) > len(words) / 2
    decoder = load_lexicon_decoder(root / "data" / "lang_char", lm=lm / "3gram.arpa")
    log_probs = torch.randn(40, decoder.num_tokens, generator=torch.Generator().manual_seed(0))
    hyp = decoder.decode_one(log_probs.log_softmax(-1))
    assert hyp and set(hyp) <= set(words)
