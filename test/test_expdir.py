"""One run per experiment dir: the lock file (a second live run refuses and names the first; a
stale lock is taken over), and temp files of an interrupted save removed at the next start."""
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from icefall.expdir import LOCK_NAME, ExpDirLockedError, lock_exp_dir, unlock_exp_dir
from icefall.trainer import Trainer
from icefall.utils import AttributeDict

ROOT = Path(__file__).resolve().parents[1]


def make_trainer(exp_dir: Path) -> Trainer:
    model = nn.Linear(2, 1)
    params = AttributeDict(exp_dir=exp_dir, num_epochs=1, tensorboard=False)
    return Trainer(params, model, torch.optim.SGD(model.parameters(), lr=0.1), None, None, [])


@pytest.fixture
def other_run(tmp_path):
    """A live process that holds the lock of tmp_path/exp."""
    exp = tmp_path / "exp"
    code = ("import sys, time; from icefall.expdir import lock_exp_dir; lock_exp_dir(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(exp)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "locked"
    yield exp, proc.pid
    proc.kill()
    proc.wait()


def test_second_live_run_refuses_naming_the_first(other_run):
    exp, pid = other_run
    with pytest.raises(ExpDirLockedError, match=f"pid {pid} on host {socket.gethostname()}"):
        make_trainer(exp)
    assert not list(exp.glob("*.pt"))


def test_second_training_command_refuses_before_writing(other_run):
    """The real script: refuses at once (exit code 1), no log file, naming the first run."""
    exp, pid = other_run
    script = ROOT / "egs/mini/SSL/zipformer/pretrain.py"
    proc = subprocess.run([sys.executable, str(script), "--exp-dir", str(exp)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert proc.returncode == 1
    assert f"in use by another run: pid {pid}" in proc.stderr, proc.stderr[-2000:]
    assert not (exp / "log").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / LOCK_NAME).write_text(f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}"}}')
    caplog.set_level(logging.WARNING)
    make_trainer(exp)
    assert f"taking over the stale lock of pid {dead.pid}" in caplog.text
    assert f'"pid": {os.getpid()}' in (exp / LOCK_NAME).read_text()
    unlock_exp_dir(exp)
    assert not (exp / LOCK_NAME).exists()


def test_lock_of_a_live_run_on_another_host_is_respected(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / LOCK_NAME).write_text('{"pid": 1, "host": "node-elsewhere"}')
    with pytest.raises(ExpDirLockedError, match="pid 1 on host node-elsewhere"):
        lock_exp_dir(exp)


def test_training_releases_the_lock(tmp_path):
    trainer = make_trainer(tmp_path / "exp")
    assert (tmp_path / "exp" / LOCK_NAME).is_file()
    trainer.train()
    assert not (tmp_path / "exp" / LOCK_NAME).exists()


def test_temp_files_of_an_interrupted_save_are_removed(tmp_path, caplog):
    exp = tmp_path / "exp"
    exp.mkdir()
    left = [exp / ".tmp4242.epoch-3.pt", exp / ".tmp17.best-valid-loss.pt"]
    for f in left:
        f.write_bytes(b"half a checkpoint")
    (exp / "notes.tmp").write_text("mine")  # not ours: kept
    caplog.set_level(logging.INFO)
    make_trainer(exp)
    assert not any(f.exists() for f in left)
    assert (exp / "notes.tmp").exists()
    assert "interrupted save" in caplog.text
