"""End to end on the tiny mini corpus: k-means labels, pretraining, and the whole demo pipeline
(run.sh --tiny: prepare, pretrain, fine-tune, decode, export, ONNX decode)."""
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import drop_checkpoints, scoped_tmp_dir

from icefall.data.datamodule import DataModule
from icefall.eval.pnmi import pnmi_from_alignments
from icefall.optim import ScaledAdam
from icefall.ssl.pretrain import build_model, compute_loss, get_parser

ROOT = Path(__file__).resolve().parents[1]
RUN_SH = ROOT / "egs" / "mini" / "SSL" / "run.sh"

pytestmark = pytest.mark.slow


def _run(args, cwd):
    proc = subprocess.run(
        ["bash", str(RUN_SH), "--tiny", "--work-dir", str(cwd), *args],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise AssertionError(f"run.sh {args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def tiny_corpus(request):
    """run.sh --tiny stage 0: the tiny corpus with fbank, tokens and k-means labels."""
    work = scoped_tmp_dir(request, "mini")
    _run(["--stop-stage", "0"], work)
    return work


def _units_and_alignments(cuts_path):
    from lhotse import load_manifest_lazy

    units, ali = {}, {}
    for cut in load_manifest_lazy(cuts_path):
        units[cut.id] = np.array([int(v) for v in cut.custom["kmeans"].split()])
        phones = cut.supervisions[0].alignment["phone"]
        ali[cut.id] = [(a.start, a.start + a.duration, a.symbol) for a in phones]
    return units, ali


def test_kmeans_labels_beat_random_labels(tiny_corpus):
    units, ali = _units_and_alignments(tiny_corpus / "data/kmeans-fbank-100/mini_cuts_train-unlabeled.jsonl.gz")
    for cut_id, u in units.items():  # labels at 100 Hz cover the utterance
        assert abs(len(u) - 100 * ali[cut_id][-1][1]) <= 2
    ours = pnmi_from_alignments(units, ali, 100.0)["pnmi"]
    rng = np.random.default_rng(0)
    random = {k: rng.integers(0, 100, len(v)) for k, v in units.items()}
    chance = pnmi_from_alignments(random, ali, 100.0)["pnmi"]
    assert ours > 2.5 * chance and ours > 0.2, (ours, chance)


def test_pretraining_lowers_loss_and_beats_majority_class(tiny_corpus, monkeypatch):
    """250 updates on one batch of the tiny corpus: the masked-prediction loss falls and masked
    accuracy rises far above always answering the most frequent label."""
    monkeypatch.chdir(tiny_corpus)
    args = get_parser(
        encoder="zipformer-tiny", frontend="fbank", encoder_overrides="frontend_layer3_channels=32",
        cuts_prefix="mini", manifest_dir="data/kmeans-fbank-100", num_classes=100, label_rate=100.0, max_duration=30.0,
        num_workers=0, shuffle=False,
    ).parse_args([])
    args.input_type = "fbank"
    params = dict(vars(args))
    from icefall.utils import AttributeDict

    model = build_model(AttributeDict(params))
    data = DataModule(args)
    dl = data.valid_dataloader(data.load_cuts("train-unlabeled"), data.ssl_dataset(train=False))
    batch = next(iter(dl))
    labels = batch["labels"][batch["labels"] >= 0].tolist()
    majority = Counter(labels).most_common(1)[0][1] / len(labels)

    def evaluate():
        """Masked loss and accuracy over 5 fixed masks (the same in every call)."""
        model.eval()
        ce = acc = frames = 0.0
        for seed in range(5):
            torch.manual_seed(seed)
            _, info = compute_loss(model, batch, False)
            ce, acc, frames = ce + info["ce_masked"], acc + info["acc_masked"], frames + info["frames"]
        model.train()
        return ce / frames, acc / frames

    loss0, acc0 = evaluate()
    torch.manual_seed(0)
    opt = ScaledAdam(model.named_parameters(), lr=0.045)
    for step in range(250):
        loss, _ = compute_loss(model, batch, True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, acc1 = evaluate()
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    # The most frequent label (mostly silence) covers about a third of the frames.
    assert acc1 > majority + 0.15 and acc1 > acc0 + 0.3, (acc0, acc1, majority)


def _newest(path_glob):
    files = sorted(Path().glob(path_glob), key=lambda f: f.stat().st_mtime)
    assert files, f"no {path_glob}"
    return files[-1]


def test_run_sh_tiny_end_to_end(tiny_corpus, monkeypatch):
    from icefall.eval.wer import compute_cer, compute_wer, read_transcripts

    out = _run(["--stage", "1"], tiny_corpus)
    monkeypatch.chdir(tiny_corpus)
    ft = Path("zipformer/exp-ft")
    # Fitting the 12 labeled utterances shows every stage is wired right: an empty output has
    # 100% WER and CER (measured: 63% WER, 15% CER after 480 updates of the 1M model).
    train = read_transcripts(_newest(str(ft / "ctc-greedy-search/recogs-train-labeled-*.txt")))
    assert len(train) == 12
    assert compute_wer(train).wer < 80.0, compute_wer(train).wer
    assert compute_cer(train).wer < 35.0, compute_cer(train).wer
    # The ONNX export decodes the test split exactly as PyTorch does.
    torch_test = read_transcripts(_newest(str(ft / "ctc-greedy-search/recogs-test-*.txt")))
    onnx_test = read_transcripts(_newest(str(ft / "onnx/ctc-greedy-search/recogs-test-*.txt")))
    assert sorted(torch_test) == sorted(onnx_test)
    assert compute_wer(onnx_test).ref_len > 0
    for f in ("pretrained.pt", "onnx/model.onnx", "onnx/tokens.txt"):
        assert (ft / f).is_file(), f
    assert "| pretrained (HuBERT-style) + fine-tuned | greedy |" in out
    # Lexicon + 3-gram LM decoding (weights tuned on train-labeled in --tiny) outputs only
    # words of the lexicon and, on a model that spells most letters right, beats greedy.
    from icefall.asr.lm import read_lexicon

    lm = read_transcripts(_newest(str(ft / "ctc-lexicon-lm/recogs-train-labeled-*.txt")))
    words = set(read_lexicon(Path("data/lang_char/lexicon.txt")))
    assert len(lm) == 12 and all(set(hyp) <= words for _, _, hyp in lm)
    assert compute_wer(lm).wer < compute_wer(train).wer, (compute_wer(lm).wer, compute_wer(train).wer)
    assert "| pretrained (HuBERT-style) + fine-tuned | lexicon + LM |" in out
    # The module's later tests read none of these runs' checkpoints (2.4 GB: 2 x 60 epochs).
    for exp in ("exp-pretrain", "exp-ft", "exp-scratch"):
        drop_checkpoints(tiny_corpus / "zipformer" / exp)


def test_extract_features_matches_the_model(tiny_corpus, monkeypatch, tmp_path):
    """icefall.ssl.extract stores each chosen layer per utterance; the stored (lilcom-compressed)
    arrays equal the model's own outputs up to the compression error."""
    from icefall.ssl.extract import main as extract_main
    from icefall.utils import AttributeDict
    from lhotse import load_manifest

    monkeypatch.chdir(tiny_corpus)
    params = AttributeDict(vars(get_parser(
        encoder="zipformer-tiny", frontend="fbank", encoder_overrides="frontend_layer3_channels=32",
        num_classes=100, label_rate=100.0,
    ).parse_args([])))
    model = build_model(params).eval()
    ckpt = tmp_path / "epoch-1.pt"
    torch.save({"model": model.state_dict(), "params": dict(params)}, ckpt)
    out = tmp_path / "feats"
    extract_main(["--checkpoint", str(ckpt), "--prefix", "mini", "--splits", "dev", "--layers", "0", "2", "--out-dir", str(out)])
    cuts = load_manifest(out / "mini_cuts_dev.jsonl.gz")
    assert len(cuts) == 8
    cut = cuts[0]
    x = torch.as_tensor(cut.load_features()).unsqueeze(0)
    with torch.no_grad():
        ref, lens = model.extract_features(x, torch.tensor([x.shape[1]]), layers=[0, 2])
    for layer, r in zip((0, 2), ref):
        stored = torch.as_tensor(cut.load_custom(f"layer_{layer}"))
        r = r[0, : int(lens[0])]
        assert stored.shape == r.shape
        assert (stored - r).abs().max() < 0.01 * r.abs().max() + 1e-3


def test_run_objectives_tiny(tiny_corpus):
    """objectives/run_objectives.sh on the tiny corpus: two objectives (one per encoder family)
    pretrained for the same CPU budget, probed per layer, fine-tuned and decoded, and the
    from-scratch reference; the table has every row."""
    script = ROOT / "egs" / "mini" / "SSL" / "objectives" / "run_objectives.sh"
    proc = subprocess.run(
        ["bash", str(script), "--tiny", "--work-dir", str(tiny_corpus), "--budget-hours", "0.0005",
         "--jobs", "2", "byol", "hubert-transformer", "scratch"],
        capture_output=True, text=True,
    )
    out = tiny_corpus / "objectives"
    logs = "".join(p.read_text()[-3000:] for p in out.glob("*.out"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    for system in ("byol", "hubert-transformer"):
        log = "".join(p.read_text() for p in (out / f"exp-{system}" / "log").glob("log-pretrain-*"))
        assert "--stop-time-hours 0.0005 spent (cpu clock)" in log
        assert list((out / f"exp-{system}").glob("checkpoint-*.pt"))  # where the budget stopped it
        assert (out / f"exp-{system}" / "eval" / "layers.json").is_file()
    assert "hubert-tiny" in (out / "exp-hubert-transformer" / "config.json").read_text()
    table = (out / "results.md").read_text()
    for row in ("| fbank input |", "| byol |", "| hubert-transformer |", "| scratch |"):
        assert row in table
    assert (out / "layers.png").is_file()
