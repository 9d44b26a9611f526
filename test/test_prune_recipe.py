"""End to end on the tiny mini corpus: zipformer/prune.py with self-pinching gates reaches its
target sparsity, and the exported models (pruned.pt through decode.py, compact.pt through
load_compact) decode to exactly the hypotheses of the masked (gated) model."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import scoped_tmp_dir

from icefall.asr import decode
from icefall.asr.finetune import build_asr_model
from icefall.checkpoint import load_file
from icefall.data.tokenizer import load_tokenizer
from icefall.eval.wer import read_transcripts
from icefall.prune import add_gates, load_compact
from icefall.prune.compare import main as compare_main
from icefall.prune.finetune import resolve_patterns
from icefall.utils import AttributeDict

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "mini" / "SSL"

pytestmark = pytest.mark.slow


def _run(cmd, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def tiny_corpus(request):
    """prepare.sh --tiny up to the token sets (no k-means labels: fine-tuning needs none)."""
    work = scoped_tmp_dir(request, "mini-prune")
    _run(["bash", str(RECIPE / "prepare.sh"), "--tiny", "--stop-stage", "4"], work)
    return work


def _hyps(model, args, tokenizer):
    def fn(x, x_lens):
        return decode.decode_batch(model, x, x_lens, "ctc-greedy-search")

    ((_, dl),) = decode.split_dataloaders(args, tokenizer, ["test"])
    return {cut: hyp for cut, _, hyp in decode.decode_dataloader(fn, dl, tokenizer)}


def test_gates_reach_target_and_exports_decode_like_the_masked_model(tiny_corpus, monkeypatch):
    epochs, target = 6, 0.5
    exp = tiny_corpus / "exp-gates"
    _run([sys.executable, str(RECIPE / "zipformer" / "prune.py"), "--method", "gates",
          "--target-sparsity", str(target), "--init-ckpt", "none", "--exp-dir", str(exp),
          "--num-epochs", str(epochs), "--max-duration", "8", "--threshold-lr", "3e-4",
          "--tensorboard", "false"], tiny_corpus)
    summary = json.loads((exp / "prune-summary.json").read_text())
    assert abs(summary["sparsity_pruned_layers"] - target) <= 0.01, summary
    assert summary["compact_bytes"] < summary["dense_bytes"]

    monkeypatch.chdir(tiny_corpus)
    args = decode.get_parser(cuts_prefix="mini", lang_dir="data/lang_char", num_workers=0, max_duration=100.0).parse_args([])
    args.input_type = "fbank"
    tokenizer = load_tokenizer(args.lang_dir)

    # The masked model: the last checkpoint (weights + thresholds) in a gated model.
    ckpt = load_file(exp / f"epoch-{epochs}.pt")
    params = AttributeDict(ckpt["params"])
    masked = build_asr_model(params)
    add_gates(masked, resolve_patterns(params.patterns))
    masked.load_state_dict(ckpt["model"], strict=True)
    masked.eval()
    ref = _hyps(masked, args, tokenizer)
    assert len(ref) == 8

    compact = load_compact(exp / "compact.pt", build_asr_model(params)).eval()
    assert _hyps(compact, args, tokenizer) == ref
    # Stronger than the (possibly short) hypotheses: the same CTC posteriors, bit for bit.
    ((_, dl),) = decode.split_dataloaders(args, tokenizer, ["test"])
    batch = next(iter(dl))
    with torch.no_grad():
        outs = [m.ctc_output(m.forward_encoder(batch["inputs"], batch["lengths"])[0]) for m in (masked, compact)]
    assert torch.equal(outs[0], outs[1])

    _run([sys.executable, str(RECIPE / "zipformer" / "decode.py"), "--checkpoint", str(exp / "pruned.pt"),
          "--exp-dir", str(exp), "--test-splits", "test"], tiny_corpus)
    recogs = exp / "ctc-greedy-search" / "recogs-test-ctc-greedy-search-pruned.txt"
    assert {cut: hyp for cut, _, hyp in read_transcripts(recogs)} == ref


def test_prune_sweep_from_a_dense_model_with_seed_and_lm(tiny_corpus):
    """local/prune_sweep.sh as issue 22 runs it: every system starts from a given fine-tuned
    model (--dense), one seed, greedy and lexicon + LM decoding, and compare --sweep reads it."""
    _run(["bash", str(RECIPE / "prepare.sh"), "--tiny", "--stage", "6", "--stop-stage", "6",
          "--lm-sentences", "2000"], tiny_corpus)
    _run([sys.executable, str(RECIPE / "zipformer" / "finetune.py"), "--init-ckpt", "none", "--num-epochs", "1",
          "--max-duration", "8", "--tensorboard", "false", "--exp-dir", "exp-dense-ft"], tiny_corpus)
    dense = tiny_corpus / "exp-dense-ft" / "epoch-1.pt"
    root = tiny_corpus / "sweep" / "seed7"
    _run(["bash", str(RECIPE / "local" / "prune_sweep.sh"), "--pretrained", "none", "--dense", str(dense),
                "--epochs", "1", "--targets", "0.5", "--systems", "gates ump mixed", "--root", "sweep/seed7",
                "--seed", "7", "--lm", "data/lm/3gram.arpa", "--lm-weight", "0.5", "--word-score", "1",
                "--", "--max-duration", "8"], tiny_corpus)
    for name in ("dense", "gates-50", "ump-50", "mixed-50"):
        exp = root / f"exp-{name}"
        params = load_file(exp / "pruned.pt")["params"]
        assert params["seed"] == 7 and Path(params["dense_ckpt"]) == dense, name  # all start from --dense
        assert params["num_epochs"] == 1 and (exp / "wall-seconds").is_file()
        assert (exp / "ctc-greedy-search" / "recogs-test-ctc-greedy-search-pruned.txt").is_file()
        (lm_recogs,) = (exp / "ctc-lexicon-lm").glob("recogs-test-*-lm-weight-0.5-word-score-1-pruned.txt")
    assert (root / "table.md").is_file() and (root / "table-lm.md").is_file()
    groups = compare_main(["--sweep", str(root), "--decoding-method", "ctc-lexicon-lm"])
    assert {(g["system"], g["target"]) for g in groups} == {("dense", 0.0), ("gates", 0.5), ("ump", 0.5),
                                                            ("mixed", 0.5)}
    assert all(g["seeds"] == 1 for g in groups)
