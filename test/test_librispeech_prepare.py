"""egs/librispeech/SSL/prepare.sh on fixture trees laid out like LibriSpeech and Libri-light's
librispeech_finetuning archive (offline): manifests, fbank, the pretraining split, the
10 min / 1 h / 10 h fine-tuning sets, token sets, k-means labels (iterations 1 and 2),
idempotence, and the offline download message. Plus icefall.data.librispeech's split logic."""
import gzip
import hashlib
import json
import os
import sys
import subprocess
from pathlib import Path

import pytest
import torch

from icefall.data import librispeech as ls

PREPARE = Path(__file__).resolve().parents[1] / "egs" / "librispeech" / "SSL" / "prepare.sh"
PARTS = {"dev-clean": 6, "test-clean": 6, "train-clean-100": 8, "train-clean-360": 6,
         "train-other-500": 6}
K1, K2, BPE = 8, 5, 40  # small: the fixture has ~20 utterances of training text


def _run(cwd, *args, env=None):
    # One intra-op thread: tiny work, and a second thread thrashes on a busy 2-core machine
    # (stage 6 took 67 s instead of 4 s here).
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(["bash", str(PREPARE), "--parts", " ".join(PARTS), "--num-jobs", "2",
                           "--bpe-vocab-size", str(BPE), "--num-clusters-1", str(K1),
                           "--num-clusters-2", str(K2), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _transcripts(corpus: Path, part: str) -> dict:
    """{utterance id: text} read straight from the fixture's *.trans.txt files."""
    out = {}
    for f in (corpus / part).rglob("*.trans.txt"):
        for line in f.read_text().splitlines():
            utt, text = line.split(" ", 1)
            out[utt] = text
    return out


def _cuts(path: Path) -> list:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A fixture corpus in <dir>/download/LibriSpeech and prepare.sh stages 0-5 run on it."""
    from icefall.data.corpus import write_librispeech_finetuning_tree, write_librispeech_tree

    root = tmp_path_factory.mktemp("librispeech")
    write_librispeech_tree(root / "download", PARTS, seed=0)
    write_librispeech_finetuning_tree(root / "download", utts_per_dir=1, seed=0)
    r = _run(root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root, r.stdout


@pytest.mark.slow
def test_manifests_splits_and_lang_dirs(recipe):
    root, out = recipe
    for stage in range(6):
        assert f"Stage {stage}:" in out
    corpus = root / "download" / "LibriSpeech"
    fbank = root / "data" / "fbank"
    texts = {}
    for part, n in PARTS.items():
        ref = _transcripts(corpus, part)
        assert len(ref) == n
        cuts = _cuts(fbank / f"librispeech_cuts_{part}.jsonl.gz")
        assert {c["id"]: c["supervisions"][0]["text"] for c in cuts} == ref
        # fbank at 100 Hz for the whole recording
        assert all(abs(c["features"]["num_frames"] - 100 * c["duration"]) <= 1 for c in cuts)
        texts.update(ref)

    # train-all-shuf: exactly the three training parts, in a different order
    train_ids = [c["id"] for p in ls.TRAIN_PARTS for c in _cuts(fbank / f"librispeech_cuts_{p}.jsonl.gz")]
    shuf = [c["id"] for c in _cuts(fbank / "librispeech_cuts_train-all-shuf.jsonl.gz")]
    assert len(shuf) == sum(PARTS[p] for p in ls.TRAIN_PARTS) == len(set(shuf))
    assert sorted(shuf) == sorted(train_ids) and shuf != train_ids

    # Libri-light's sets: 10 min = 1h/0, 1 h = 1h/*, 10 h = 1h/* + 9h, with their transcripts
    ft = root / "download" / "librispeech_finetuning"
    sets = {name: {c["id"]: c["supervisions"][0]["text"]
                   for c in _cuts(fbank / f"librispeech_cuts_{name}.jsonl.gz")}
            for name in ("train-10min", "train-1h", "train-10h")}
    assert sets["train-10min"] == {**_transcripts(ft, "1h/0/clean"), **_transcripts(ft, "1h/0/other")}
    assert sets["train-1h"] == {k: v for d in range(6) for kind in ("clean", "other")
                                for k, v in _transcripts(ft, f"1h/{d}/{kind}").items()}
    assert sets["train-10h"] == {**sets["train-1h"], **_transcripts(ft, "9h")}
    assert (len(sets["train-10min"]), len(sets["train-1h"]), len(sets["train-10h"])) == (2, 12, 14)

    from icefall.data.tokenizer import load_tokenizer, read_tokens

    lang_bpe, lang_char = root / "data" / f"lang_bpe_{BPE}", root / "data" / "lang_char"
    assert len(read_tokens(lang_bpe / "tokens.txt")) == BPE
    chars = set(read_tokens(lang_char / "tokens.txt"))
    train_text = [t for p in ls.TRAIN_PARTS for t in _transcripts(corpus, p).values()]
    assert {c for t in train_text for c in t if c != " "} <= chars
    sp = load_tokenizer(lang_bpe)
    assert sp.decode(sp.encode([train_text[0]])[0]) == train_text[0]


def _check_labels(cuts: list, k: int, rate: float, tol_frames: int) -> None:
    for c in cuts:
        labels = [int(x) for x in c["custom"]["kmeans"].split()]
        assert abs(len(labels) - rate * c["duration"]) <= tol_frames, (c["id"], len(labels))
        assert min(labels) >= 0 and max(labels) < k


@pytest.mark.slow
def test_iteration1_labels(recipe):
    root, _ = recipe
    d = root / "data" / f"kmeans-mfcc-{K1}"
    seen = set()
    for split, n in [("train-all-shuf", 20), ("dev-clean", PARTS["dev-clean"])]:
        cuts = _cuts(d / f"librispeech_cuts_{split}.jsonl.gz")
        assert len(cuts) == n
        _check_labels(cuts, K1, 100.0, 1)  # MFCC: 10 ms shift
        seen |= {int(x) for c in cuts for x in c["custom"]["kmeans"].split()}
    assert len(seen) == K1  # every cluster is used somewhere
    assert not (d / "librispeech_cuts_test-clean.jsonl.gz").exists()


@pytest.mark.slow
def test_second_run_skips_finished_stages(recipe):
    root, _ = recipe
    before = _digest(root / "data")
    r = _run(root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done before") >= len(PARTS) + 4  # stage 1 parts, 3, 4 (x2), 5
    assert "Labelled" not in r.stderr and "wrote" not in r.stderr
    assert _digest(root / "data") == before


@pytest.mark.slow
def test_iteration2_labels_from_a_checkpoint(recipe, tmp_path):
    """Stage 6 with a (randomly initialised) tiny model saved the way pretrain.py saves it."""
    from icefall.ssl.pretrain import build_model, get_parser
    from icefall.utils import AttributeDict

    root, _ = recipe
    r = _run(root, "--stage", "6", "--stop-stage", "6")
    assert r.returncode != 0 and "--iter1-ckpt" in r.stdout

    args = get_parser(encoder="zipformer-tiny", frontend="fbank",
                      encoder_overrides="frontend_layer3_channels=32").parse_args([])
    params = AttributeDict(vars(args))
    model = build_model(params)
    ckpt = tmp_path / "epoch-1.pt"
    torch.save({"model": model.state_dict(), "params": dict(params)}, ckpt)
    r = _run(root, "--stage", "6", "--stop-stage", "6", "--iter1-ckpt", str(ckpt),
             "--iter2-layer", "2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    d = root / "data" / f"kmeans-l2-{K2}"
    for split, n in [("train-all-shuf", 20), ("dev-clean", PARTS["dev-clean"])]:
        cuts = _cuts(d / f"librispeech_cuts_{split}.jsonl.gz")
        assert len(cuts) == n
        # 50 Hz after the front end's subsampling, which loses a few edge frames: within the
        # 0.1 s that training's CutFilter accepts (icefall.data.dataset)
        _check_labels(cuts, K2, 50.0, 5)


@pytest.mark.slow
def test_download_offline_fails_with_instructions(tmp_path):
    # An unreachable proxy makes the download fail at once, as on a machine without internet.
    proxy = "http://127.0.0.1:9"
    r = _run(tmp_path, "--stage", "0", "--stop-stage", "0", "--parts", "dev-other",
             env={"http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy,
                  "HTTPS_PROXY": proxy})
    assert r.returncode != 0
    assert "openslr.org/12" in r.stdout and "tar xzf dev-other.tar.gz -C download" in r.stdout


def test_select_hours_is_a_minimal_seeded_prefix():
    lines = [json.dumps({"id": f"u{i}", "duration": 1.0 + (i * 7 % 5)}) for i in range(50)]
    total = sum(json.loads(x)["duration"] for x in lines)
    a = ls.select_hours(lines, 0.1 * total, seed=1)
    assert a == ls.select_hours(lines, 0.1 * total, seed=1)
    assert a != ls.select_hours(lines, 0.1 * total, seed=2)
    d = [json.loads(x)["duration"] for x in a]
    assert sum(d) >= 0.1 * total > sum(d) - d[-1]
    assert len(set(a)) == len(a) and set(a) <= set(lines)
    assert ls.select_hours(lines, 2 * total) != [] and len(ls.select_hours(lines, 2 * total)) == 50


def test_combine_shuffled_is_a_deterministic_permutation(tmp_path):
    for name, n in (("a", 5), ("b", 7)):
        ls.write_lines([json.dumps({"id": f"{name}{i}"}) for i in range(n)], tmp_path / f"{name}.jsonl.gz")
    ins = [tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"]
    assert ls.combine_shuffled(ins, tmp_path / "x.jsonl.gz", seed=3) == 12
    ls.combine_shuffled(ins, tmp_path / "y.jsonl.gz", seed=3)
    assert (tmp_path / "x.jsonl.gz").read_bytes() == (tmp_path / "y.jsonl.gz").read_bytes()
    ids = [json.loads(x)["id"] for x in ls.read_lines(tmp_path / "x.jsonl.gz")]
    concat = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(7)]
    assert sorted(ids) == sorted(concat) and ids != concat


def test_finetuning_sets_name_what_is_missing_or_wrong(tmp_path):
    ft = tmp_path / "librispeech_finetuning"
    d = ft / "1h" / "0" / "clean" / "5000" / "50000"
    d.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="1h/0/other: missing"):
        ls.finetuning_set_items(ft, "train-10min")
    (ft / "1h" / "0" / "other").mkdir(parents=True)
    (d / "5000-50000.trans.txt").write_text("5000-50000-0000 HELLO WORLD\n")
    with pytest.raises(ValueError, match="transcripts and .flac files differ"):
        ls.finetuning_set_items(ft, "train-10min")
    (d / "5000-50000-0000.flac").write_bytes(b"")
    assert ls.finetuning_set_items(ft, "train-10min") == [
        ("5000-50000-0000", d / "5000-50000-0000.flac", "HELLO WORLD", "5000")]
    (d / "5000-50000.trans.txt").write_text("5000-50000-0000\n")
    with pytest.raises(ValueError, match="5000-50000.trans.txt:1: expected"):
        ls.finetuning_set_items(ft, "train-10min")
