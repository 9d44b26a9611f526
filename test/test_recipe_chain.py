"""Each real recipe end to end on its offline fixture tree, through its own scripts:

prepare.sh -> pretrain.py (tiny Zipformer, a few updates) -> finetune.py twice (pruned RNN-T on
BPE; CTC on letters) -> decode.py --epoch --avg --use-averaged-model with every decoding method
-> export.py -> pretrained.py, jit_pretrained.py and onnx_pretrained.py (the standalone one) on
wav files give decode.py's hypotheses -> sherpa-onnx's offline recognizer gives them too.

One chain per corpus (LibriSpeech, Vietnamese), built once per module; the tests read it. The
Python scripts run in this process (``runpy``, with ``sys.argv`` set), from the recipe's working
directory, exactly as ``./zipformer/<script>.py ...`` runs them.
"""
from __future__ import annotations

import contextlib
import io
import os
import runpy
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import pytest
import soundfile as sf
from conftest import scoped_tmp_dir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--encoder", "zipformer-tiny", "--frontend", "fbank",
        "--encoder-overrides", "frontend_layer3_channels=32,dropout=0.0", "--ref-duration", "1.0",
        "--num-workers", "0", "--warmup-batches", "2", "--lr-batches", "100",
        "--log-interval", "1", "--valid-interval", "1000", "--save-every-n", "1000", "--average-period", "1"]
# decode.py --epoch 2 --avg 1 --use-averaged-model true: epoch-2's running average minus epoch-1's
MODEL = ["--epoch", "2", "--avg", "1", "--use-averaged-model", "true"]
HEADS = {  # experiment -> (lang dir, fine-tuning head options, decoding methods)
    "exp-rnnt": ("bpe", ["--use-transducer", "true", "--use-ctc", "false"],
                 ["greedy_search", "modified_beam_search"]),
    "exp-ctc": ("char", ["--use-transducer", "false", "--use-ctc", "true"],
                ["ctc-greedy-search", "ctc-prefix-beam-search"]),
}


@dataclass
class Corpus:
    name: str
    make_tree: object  # (download dir) -> None
    prepare_args: List[str]
    labels_args: List[str]  # icefall.ssl.labels options (after prepare.sh) or [] if it made them
    kmeans_dir: str
    num_classes: int
    pretrain_args: List[str]
    finetune_args: List[str]
    bpe_dir: str
    test_split: str
    seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def recipe(self) -> Path:
        return ROOT / "egs" / self.name / "SSL"


def _librispeech_tree(dl: Path) -> None:
    from icefall.data.corpus import write_librispeech_finetuning_tree, write_librispeech_tree

    write_librispeech_tree(dl, {"dev-clean": 2, "test-clean": 3, "train-clean-100": 6}, seed=0)
    write_librispeech_finetuning_tree(dl, utts_per_dir=1, seed=0)


def _vietnamese_tree(dl: Path) -> None:
    from icefall.data import vietnamese as vi

    vi.write_gigaspeech2_tree(dl / "gigaspeech2", {"train": 8, "dev": 2, "test": 3}, seed=0)
    vi.write_commonvoice_tree(dl, {"dev": 1, "test": 1}, seed=0)
    vi.write_fleurs_tree(dl / "fleurs", {"dev": 1, "test": 1}, seed=0)


CORPORA = {
    "librispeech": Corpus(
        "librispeech", _librispeech_tree,
        ["--parts", "dev-clean test-clean train-clean-100", "--num-jobs", "1", "--bpe-vocab-size", "30",
         "--num-clusters-1", "8"],
        [], "data/kmeans-mfcc-8", 8,
        ["--label-rate", "100", "--valid-split", "dev-clean"],
        ["--train-split", "train-10min", "--valid-split", "dev-clean"],
        "data/lang_bpe_30", "test-clean"),
    "vietnamese": Corpus(
        "vietnamese", _vietnamese_tree,
        ["--dl-dir", "download", "--num-jobs", "1", "--bpe-vocab-size", "50", "--labeled-hours", "0.003"],
        # VietASR labels pretraining with k-means of a fine-tuned ASR encoder (iterate.sh); the
        # chain uses MFCC k-means, which needs no model.
        ["--prefix", "vietnamese", "--features", "mfcc", "--num-clusters", "8", "--fit-split",
         "gigaspeech2-train", "--splits", "gigaspeech2-train", "gigaspeech2-dev", "--out-dir", "data/kmeans-mfcc-8"],
        "data/kmeans-mfcc-8", 8,
        ["--label-rate", "100"],
        ["--train-split", "train-0.003h"],
        "data/lang_bpe_50", "gigaspeech2-test"),
}


def run_script(script: Path, *args: str) -> str:
    """``script args`` as its command line runs it (in this process); returns what it printed."""
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [str(script), *map(str, args)]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved
    return out.getvalue()


@contextlib.contextmanager
def working_dir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _timed(corpus: Corpus, step: str, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    corpus.seconds[step] = corpus.seconds.get(step, 0.0) + time.perf_counter() - start
    return out


@pytest.fixture(scope="module", params=sorted(CORPORA))
def chain(request):
    """The corpus's recipe run from prepare.sh to export.py in a fresh directory."""
    c = CORPORA[request.param]
    root = scoped_tmp_dir(request, c.name)
    c.make_tree(root / "download")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    r = subprocess.run(["bash", str(c.recipe / "prepare.sh"), *c.prepare_args], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    c.seconds["prepare.sh"] = time.perf_counter() - start
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    zf = c.recipe / "zipformer"
    with working_dir(root):
        if c.labels_args:
            from icefall.ssl.labels import main as labels_main

            _timed(c, "labels", labels_main, c.labels_args)
        _timed(c, "pretrain", run_script, zf / "pretrain.py", *TINY, *c.pretrain_args,
               "--manifest-dir", c.kmeans_dir, "--num-classes", c.num_classes, "--num-epochs", "1",
               "--max-duration", "12", "--base-lr", "0.045", "--exp-dir", "zipformer/exp-pretrain")
        for exp, (lang, head, _) in HEADS.items():
            lang_dir = c.bpe_dir if lang == "bpe" else "data/lang_char"
            _timed(c, "finetune", run_script, zf / "finetune.py", *TINY, *c.finetune_args, *head,
                   "--init-ckpt", "zipformer/exp-pretrain/epoch-1.pt", "--lang-dir", lang_dir,
                   # the recipes' fine-tuning lr: a few updates leave the heads emitting varied
                   # tokens (a higher one makes CTC emit blanks only, and the checks see nothing)
                   "--base-lr", "0.002",
                   "--decoder-dim", "32", "--joiner-dim", "32", "--num-epochs", "2", "--max-duration", "6",
                   "--warm-step", "1", "--mask-prob", "0.0", "--enable-spec-aug", "false",
                   "--exp-dir", f"zipformer/{exp}")
            _timed(c, "export", run_script, zf / "export.py", *MODEL, "--exp-dir", f"zipformer/{exp}",
                   "--lang-dir", lang_dir)
    yield c, root
    print(f"\n{c.name} chain: " + ", ".join(f"{k} {v:.1f} s" for k, v in c.seconds.items()))


def _lang_dir(c: Corpus, exp: str) -> str:
    return c.bpe_dir if HEADS[exp][0] == "bpe" else "data/lang_char"


def _recogs(path: Path) -> Dict[str, str]:
    """{cut id: hypothesis} of a recogs-*.txt file (``id:\\tref=[...]`` / ``id:\\thyp=[...]``)."""
    import ast

    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cut, _, rest = line.partition(":\t")
        if rest.startswith("hyp="):
            out[cut] = " ".join(ast.literal_eval(rest[4:]))
    return out


def _decode(c: Corpus, root: Path, exp: str, method: str, on_the_fly_feats: bool = False) -> Dict[str, str]:
    """decode.py's hypotheses {cut id: text}; with stored fbank (what users run) or, with
    ``on_the_fly_feats``, fbank computed from the audio by the extractor pretrained.py uses."""
    res_dir = root / "zipformer" / exp / (method + ("-on-the-fly" if on_the_fly_feats else ""))
    with working_dir(root):
        printed = _timed(c, "decode", run_script, c.recipe / "zipformer" / "decode.py", *MODEL,
                         "--exp-dir", f"zipformer/{exp}", "--lang-dir", _lang_dir(c, exp),
                         "--decoding-method", method, "--test-splits", c.test_split, "--res-dir", res_dir,
                         "--on-the-fly-feats", str(on_the_fly_feats), "--num-workers", "0", "--max-duration", "100")
    assert f"{c.test_split}\t{method}" in printed
    key = f"{method}*epoch-2-avg-1-use-averaged-model"
    for kind in ("errs", "wer-summary"):
        assert len(list(res_dir.glob(f"{kind}-{c.test_split}-{key}.txt"))) == 1, kind
    files = list(res_dir.glob(f"recogs-{c.test_split}-{key}.txt"))
    assert len(files) == 1, files
    return _recogs(files[0])


def _test_wavs(root: Path, split_prefix: str, split: str) -> Dict[str, Path]:
    """{cut id: 16 kHz 16-bit wav} of the split's cuts (the stored audio, rewritten as wav)."""
    from lhotse import load_manifest

    out = {}
    with working_dir(root):
        for cut in load_manifest(root / "data" / "fbank" / f"{split_prefix}_cuts_{split}.jsonl.gz"):
            wav = root / "wavs" / f"{cut.id}.wav"
            wav.parent.mkdir(exist_ok=True)
            sf.write(wav, cut.load_audio()[0], 16000, subtype="PCM_16")
            out[cut.id] = wav
    return out


def _transcripts(printed: str, files: List[str]) -> List[str]:
    """The transcripts of ``files`` in what a script printed (``<file>: <text>`` lines)."""
    lines = {}
    for line in printed.splitlines():
        path, sep, text = line.partition(":")
        if sep:
            lines[path] = text.strip()
    return [lines[f] for f in files]


GREEDY = ("greedy_search", "ctc-greedy-search")


@pytest.mark.slow
@pytest.mark.parametrize("exp", sorted(HEADS))
def test_every_script_gives_decode_py_hypotheses(chain, exp):
    """decode.py runs every method on the stored fbank. On the same audio, pretrained.py and
    jit_pretrained.py give decode.py's hypotheses for every method and the standalone
    onnx_pretrained.py (kaldi-native-fbank) for the greedy ones. The reference is decode.py
    with ``--on-the-fly-feats true``: the scripts compute fbank from the audio, and the lilcom
    rounding of the stored fbank (~1e-2) flips near ties of this almost untrained model, whose
    greedy paths are long strings of random letters; kaldi-native-fbank differs from lhotse's
    fbank by < 1e-4 (test_onnx_pretrained.py)."""
    c, root = chain
    zf = c.recipe / "zipformer"
    wavs = _test_wavs(root, c.name, c.test_split)
    ids = sorted(wavs)
    files = [str(wavs[i]) for i in ids]
    for method in HEADS[exp][2]:
        assert sorted(_decode(c, root, exp, method)) == ids
        ref = _decode(c, root, exp, method, on_the_fly_feats=True)
        assert sorted(ref) == ids
        ref = [ref[i] for i in ids]
        with working_dir(root):
            pt = _transcripts(run_script(zf / "pretrained.py", "--checkpoint", f"zipformer/{exp}/pretrained.pt",
                                         "--lang-dir", _lang_dir(c, exp), "--decoding-method", method, *files), files)
            jit = _transcripts(run_script(zf / "jit_pretrained.py", "--model-dir", f"zipformer/{exp}/jit",
                                          "--decoding-method", method, *files), files)
            assert pt == ref and jit == ref, method
            assert any(ref), f"{method}: every hypothesis is empty: the comparison would show nothing"
            if method in GREEDY:
                onnx = _transcripts(run_script(zf / "onnx_pretrained.py", "--model-dir", f"zipformer/{exp}/onnx",
                                               "--decoding-method", method, *files), files)
                assert onnx == ref, method
        print(f"\n{c.name} {exp} {method}: {ref}")


@pytest.mark.slow
@pytest.mark.parametrize("exp", sorted(HEADS))
def test_sherpa_onnx_gives_our_hypotheses(chain, exp):
    """sherpa-onnx's offline recognizer reads the exported fbank-front-end transducer
    (``from_transducer``) and CTC model (``from_zipformer_ctc``) and its greedy search gives
    onnx_pretrained.py's hypotheses (letter models: sherpa-onnx keeps the ``|`` between words)."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx", reason="PyPI sherpa-onnx is not installed")
    c, root = chain
    onnx = root / "zipformer" / exp / "onnx"
    wavs = _test_wavs(root, c.name, c.test_split)
    files = [str(wavs[i]) for i in sorted(wavs)]
    if exp == "exp-rnnt":
        rec = sherpa_onnx.OfflineRecognizer.from_transducer(
            str(onnx / "encoder.onnx"), str(onnx / "decoder.onnx"), str(onnx / "joiner.onnx"),
            str(onnx / "tokens.txt"), num_threads=1, decoding_method="greedy_search")
    else:
        rec = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(str(onnx / "model.onnx"), str(onnx / "tokens.txt"),
                                                               num_threads=1)
    got = []
    for f in files:
        samples, rate = sf.read(f, dtype="float32")
        stream = rec.create_stream()
        stream.accept_waveform(rate, samples)
        rec.decode_stream(stream)
        got.append(" ".join(stream.result.text.split()))  # letter models: "▁" prints as a space
    with working_dir(root):
        ours = _transcripts(run_script(c.recipe / "zipformer" / "onnx_pretrained.py", "--model-dir", str(onnx), *files),
                            files)
    assert got == ours
    assert any(ours), "every hypothesis is empty: the comparison would show nothing"
