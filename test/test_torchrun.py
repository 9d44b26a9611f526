"""Multi-process pretraining under torchrun (gloo, 2 CPU processes) through the mini recipe's
``zipformer/pretrain.py``, on the tiny mini corpus.

What "the same global batch" means here. lhotse samplers give rank r of W the batches
r, r+W, r+2W, ... of the sequence a 1-process sampler (same seed, same --max-duration) yields.
So one optimizer step of a 2-process run sees batches 2k and 2k+1, as does a 1-process run
with ``--accum-grad 2``. Three more things differ, and the comparison removes each openly:

- DDP averages the two ranks' gradients; accumulation sums them. The 1-process run scales its
  loss by 1/2 (ScaledAdam is nearly, not exactly, invariant to the gradient scale: without
  the 1/2 the parameters differ by ~0.4% after 4 steps).
- Random masks, dropout and Zipformer's layer skipping draw from each process's RNG: rank 1
  draws batch 2k+1's from the same state as rank 0 draws batch 2k's, unlike one process. The
  harness seeds the RNGs from each batch's cut ids, so a batch's randomness depends only on
  the batch.
- Schedules count per-process batches (icefall's convention): with --accum-grad 2 Eden and the
  ScheduledFloats would see twice the batch index. --lr-batches/--ref-duration 1e9 and
  --warmup-batches 0 make them constant over these few steps.

With those, the 2-process parameters equal the 1-process ones (bitwise here). The same
harness checks that only rank 0 writes checkpoints and that ``--start-batch`` resumes a
2-process run exactly.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import drop_checkpoints, scoped_tmp_dir

from icefall.checkpoint import load_file

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "egs" / "mini" / "SSL" / "zipformer" / "pretrain.py"
PREPARE = ROOT / "egs" / "mini" / "SSL" / "prepare.sh"
MAX_DURATION = 2.8  # one cut per batch: every chosen cut is shorter, any two are longer
NUM_CUTS = 8  # 4 steps of 2 cuts

# Runs a script with: find_unused_parameters (Zipformer skips layers at random),
# per-batch RNG seeds (PER_BATCH_SEED=1) and a loss scale (LOSS_SCALE).
HARNESS = '''
import os, random, runpy, sys, zlib
import numpy as np, torch
import icefall.ssl.pretrain as pt

_loss = pt.compute_loss


def compute_loss(model, batch, is_training):
    if is_training and os.environ.get("PER_BATCH_SEED") == "1":
        s = zlib.crc32(" ".join(batch["cut_ids"]).encode())
        torch.manual_seed(s); random.seed(s); np.random.seed(s)
    loss, info = _loss(model, batch, is_training)
    return loss * float(os.environ.get("LOSS_SCALE", "1")), info


class Trainer(pt.Trainer):
    def __init__(self, params, *args, **kwargs):
        params.find_unused_parameters = True
        super().__init__(params, *args, **kwargs)


pt.compute_loss, pt.Trainer = compute_loss, Trainer
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as `python script.py` does
runpy.run_path(sys.argv[0], run_name="__main__")
'''

COMMON = [
    "--manifest-dir", "data/kmeans-fbank-100", "--train-split", "train-ddp",
    "--valid-split", "dev-ddp", "--bucketing-sampler", "false", "--max-duration", str(MAX_DURATION),
    "--num-epochs", "1", "--lr-batches", "1e9", "--warmup-batches", "0", "--ref-duration", "1e9",
    "--save-every-n", "2", "--tensorboard", "false", "--log-interval", "1",
    "--valid-interval", "1000", "--num-workers", "0",
]


@pytest.fixture(scope="module")
def corpus(request):
    """The tiny mini corpus with k-means labels, and train-ddp: NUM_CUTS cuts whose durations
    make each batch exactly one cut, so a 2-process step is exactly 2 cuts."""
    from lhotse import CutSet, load_manifest

    root = scoped_tmp_dir(request, "mini")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    for stage in ("1", "3", "5"):  # audio, fbank, labels (validation and tokens not needed)
        r = subprocess.run(["bash", str(PREPARE), "--tiny", "--stage", stage, "--stop-stage", stage],
                           cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = root / "data" / "kmeans-fbank-100"
    cuts = [c for c in load_manifest(d / "mini_cuts_train-unlabeled.jsonl.gz")
            if 1.0 <= c.duration < MAX_DURATION][:NUM_CUTS]
    assert len(cuts) == NUM_CUTS and 2 * min(c.duration for c in cuts) > MAX_DURATION
    CutSet.from_cuts(cuts).to_file(d / "mini_cuts_train-ddp.jsonl.gz")
    load_manifest(d / "mini_cuts_dev.jsonl.gz").subset(first=4).to_file(d / "mini_cuts_dev-ddp.jsonl.gz")
    (root / "harness.py").write_text(HARNESS)
    return root


def _train(root, exp, nproc, *extra, harness=True, **env):
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone"]
    cmd += (["harness.py"] if harness else []) + [str(PRETRAIN), *COMMON, "--exp-dir", exp, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _model(path):
    return load_file(path)["model"]


def _max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item()
               for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def runs(corpus):
    """The 2-process run and its 1-process equivalent (per-batch seeds in both)."""
    two = _train(corpus, "exp-2proc", 2, PER_BATCH_SEED="1")
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = _train(corpus, "exp-1proc", 1, "--accum-grad", "2", PER_BATCH_SEED="1", LOSS_SCALE="0.5")
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    return corpus


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_same_global_batch(runs):
    two, one = _model(runs / "exp-2proc/epoch-1.pt"), _model(runs / "exp-1proc/epoch-1.pt")
    assert two.keys() == one.keys()
    # The 4 steps moved the parameters (the last 2 alone by far more than the tolerance) ...
    assert _max_diff(two, _model(runs / "exp-2proc/checkpoint-2.pt")) > 1e-3
    # ... identically in both runs.
    for k in two:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)
    # One process counted two batches per optimizer step (checkpoints every 2 batches).
    assert sorted(p.name for p in (runs / "exp-1proc").glob("checkpoint-*.pt")) == \
        [f"checkpoint-{n}.pt" for n in (2, 4, 6, 8)]


@pytest.mark.slow
def test_only_rank_0_writes_checkpoints(runs):
    exp = runs / "exp-2proc"
    files = sorted(p.name for p in exp.iterdir())
    assert files == ["best-train-loss.pt", "best-valid-loss.pt", "checkpoint-2.pt",
                     "checkpoint-4.pt", "config.json", "epoch-1.pt", "log"]
    for name in ("checkpoint-2.pt", "checkpoint-4.pt", "epoch-1.pt"):
        ckpt = load_file(exp / name)
        # the sampler state names the process that saved it
        assert (ckpt["sampler"]["rank"], ckpt["sampler"]["world_size"]) == (0, 2)
    assert len(list((exp / "log").glob("log-pretrain-*"))) == 2  # one log per rank


@pytest.mark.slow
def test_two_process_resume_from_start_batch(runs):
    exp = runs / "exp-resume"
    exp.mkdir()
    (exp / "checkpoint-2.pt").write_bytes((runs / "exp-2proc/checkpoint-2.pt").read_bytes())
    r = _train(runs, "exp-resume", 2, "--start-batch", "2", PER_BATCH_SEED="1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Resumed from exp-resume/checkpoint-2.pt" in r.stdout + r.stderr
    assert _max_diff(_model(exp / "epoch-1.pt"), _model(runs / "exp-2proc/epoch-1.pt")) == 0.0
    drop_checkpoints(exp)


@pytest.mark.slow
def test_plain_pretrain_py_under_torchrun(corpus):
    """The recipe as users run it (no harness): the Zipformer's random layer skipping leaves
    parameters without gradients in some steps, which DDP must be told about."""
    r = _train(corpus, "exp-plain", 2, harness=False)
    assert r.returncode == 0, r.stderr[-2000:]
    drop_checkpoints(corpus / "exp-plain")


@pytest.mark.slow
def test_two_process_resume_is_exact_with_process_rngs(corpus):
    """Masks and dropout drawn from each process's own RNG: checkpoints keep every rank's RNG
    state, so a resumed 2-process run equals the uninterrupted one."""
    a = _train(corpus, "exp-rng", 2)
    assert a.returncode == 0, a.stderr[-2000:]
    exp = corpus / "exp-rng-resume"
    exp.mkdir()
    (exp / "checkpoint-2.pt").write_bytes((corpus / "exp-rng/checkpoint-2.pt").read_bytes())
    b = _train(corpus, "exp-rng-resume", 2, "--start-batch", "2")
    assert b.returncode == 0, b.stderr[-2000:]
    assert _max_diff(_model(exp / "epoch-1.pt"), _model(corpus / "exp-rng/epoch-1.pt")) == 0.0
    drop_checkpoints(exp)
    drop_checkpoints(corpus / "exp-rng")


@pytest.mark.slow
def test_slurm_sbatch_script(corpus, tmp_path):
    """egs/librispeech/SSL/local/slurm_pretrain.sbatch on one 'node' of 2 CPU processes:
    stand-ins for srun (drops its options) and scontrol (this host) on PATH; the script's own
    torchrun command line and c10d rendezvous run for real."""
    sbatch = ROOT / "egs" / "librispeech" / "SSL" / "local" / "slurm_pretrain.sbatch"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "srun": 'while [[ $# -gt 0 && $1 == --* ]]; do shift; done\nexec "$@"',
        "scontrol": "echo localhost",
        "torchrun": f'exec {sys.executable} -m torch.distributed.run "$@"',
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    # torchrun runs a Python file: this one runs the mini pretrain.py through the harness.
    (corpus / "slurm_entry.py").write_text(
        "import runpy, sys\n"
        f"sys.argv = [sys.argv[0], {str(PRETRAIN)!r}, *sys.argv[1:]]\n"
        "runpy.run_path('harness.py', run_name='__main__')\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_NNODES="1",
               SLURM_JOB_ID="1", SLURM_JOB_NODELIST="localhost", GPUS_PER_NODE="2",
               MASTER_PORT="29517", SCRIPT="slurm_entry.py", OMP_NUM_THREADS="1")
    # --use-fp16 false after the script's --use-fp16 true: the last one wins (CPU run)
    r = subprocess.run(["bash", str(sbatch), *COMMON, "--exp-dir", "exp-slurm", "--use-fp16", "false"],
                       cwd=corpus, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "(0/2) Epoch 1 done" in out and "'use_fp16': False" in out
    assert len(list((corpus / "exp-slurm" / "log").glob("log-pretrain-*"))) == 2
    assert (corpus / "exp-slurm" / "epoch-1.pt").is_file()
    drop_checkpoints(corpus / "exp-slurm")
