"""Loading weights never runs code: a checkpoint whose pickle calls ``os.system`` (it would
create a marker file) is refused by every entry point that loads weights, with an error naming
the file and the global, and the marker never appears. Our own files still load."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from icefall.checkpoint import (
    UnsafeCheckpointError,
    averaged_state_dict_for_decoding,
    load_file,
    save_checkpoint,
)
from icefall.utils import AttributeDict

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "egs" / "mini" / "SSL"


class Payload:
    """Unpickling this calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil(path: Path, marker: Path, fairseq: bool = False) -> Path:
    """A file shaped like our checkpoints (or a fairseq one) with the payload inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"model": {"w": torch.zeros(2)}, "params": {"encoder": "zipformer-tiny", "x": Payload(marker)}}
    if fairseq:
        obj = {"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(x=Payload(marker)), "cfg": None}
    torch.save(obj, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    yield write_evil(tmp_path / "evil.pt", marker), marker
    assert not marker.exists(), "the payload ran"


def test_the_payload_is_real(tmp_path):
    """Without the protection (weights_only=False) the file does run its payload."""
    marker = tmp_path / "MARKER"
    torch.load(write_evil(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_load_file_refuses_and_names_file_and_global(evil):
    path, _ = evil
    with pytest.raises(UnsafeCheckpointError, match=f"{path}.*posix.system"):
        load_file(path)


def test_fairseq_loader_refuses_other_globals(tmp_path, evil):
    from icefall.ssl.fairseq_import import load_fairseq_hubert, load_pretrained_hubert

    path, marker = evil
    fs = write_evil(tmp_path / "fs.pt", marker, fairseq=True)
    for p in (path, fs):
        with pytest.raises(UnsafeCheckpointError, match=f"{p}.*posix.system"):
            load_pretrained_hubert(f"fairseq:{p}")
        with pytest.raises(UnsafeCheckpointError, match="posix.system"):
            load_fairseq_hubert(p)


def _decode_args(**kw):
    from icefall.asr.decode import get_parser

    return get_parser().parse_args([f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def test_every_library_entry_point_refuses(tmp_path, evil):
    """The functions behind resume, --init-ckpt, decode/export/pretrained.py, k-means --features
    layer, extract_features.py, layer evaluation and prune --dense-ckpt."""
    from icefall.asr.decode import load_model
    from icefall.asr.finetune import load_ssl_model
    from icefall.eval.layers import evaluate_checkpoint
    from icefall.prune.export import load_compact_state_dict
    from icefall.prune.finetune import PruneHooks
    from icefall.ssl.icefall_import import load_icefall_checkpoint
    from icefall.ssl.kmeans import KMeans
    from icefall.ssl.labels import checkpoint_feature_fn, load_pretrained
    from icefall.trainer import Trainer

    path, marker = evil
    exp = tmp_path / "exp"
    for name in ("epoch-1.pt", "epoch-2.pt", "checkpoint-8.pt"):
        write_evil(exp / name, marker)

    def trainer(**kw):
        model = nn.Linear(2, 2)
        params = AttributeDict(exp_dir=exp, num_epochs=3, tensorboard=False, **kw)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return Trainer(params, model, opt, None, None, [])

    calls = {
        "resume --start-epoch": lambda: trainer(start_epoch=2),
        "resume --start-batch": lambda: trainer(start_batch=8),
        "--init-ckpt": lambda: load_ssl_model(AttributeDict(init_ckpt=str(path))),
        "--init-ckpt fairseq:": lambda: load_ssl_model(AttributeDict(init_ckpt=f"fairseq:{path}")),
        "decode --checkpoint": lambda: load_model(_decode_args(checkpoint=path)),
        "decode --epoch --avg": lambda: load_model(_decode_args(exp_dir=exp, epoch=2, avg=1)),
        "averaging": lambda: averaged_state_dict_for_decoding(exp, epoch=2, avg=2, use_averaged_model=False),
        "k-means --features layer": lambda: checkpoint_feature_fn(path, layer=1),
        "extract_features.py": lambda: load_pretrained(path),
        "layer evaluation": lambda: evaluate_checkpoint(path, [], tmp_path / "layers", 2, 0),
        "prune --dense-ckpt": lambda: PruneHooks().setup_model(
            nn.Linear(2, 2), AttributeDict(method="uniform", dense_ckpt=path)),
        "compact.pt": lambda: load_compact_state_dict(path),
        "kmeans.pt": lambda: KMeans.load(path),
        "icefall / k2SSL import": lambda: load_icefall_checkpoint(path),
    }
    for what, call in calls.items():
        with pytest.raises(UnsafeCheckpointError, match="posix.system"):
            call()
        assert not marker.exists(), what


def _cli(script, *args, cwd=MINI):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_command_lines_refuse(tmp_path, evil):
    path, marker = evil
    fs = write_evil(tmp_path / "fs.pt", marker, fairseq=True)
    runs = [
        (ROOT / "egs/librispeech/SSL/hubert/convert_fairseq.py", "--in", fs, "--out", tmp_path / "out.pt"),
        (MINI / "zipformer/decode.py", "--checkpoint", path, "--exp-dir", tmp_path / "exp"),
        (MINI / "zipformer/export.py", "--checkpoint", path, "--exp-dir", tmp_path / "exp"),
        (MINI / "zipformer/pretrained.py", "--checkpoint", path, tmp_path / "a.wav"),
        (MINI / "zipformer/extract_features.py", "--checkpoint", path, "--layers", 1,
         "--out-dir", tmp_path / "feats"),
        ("-m", "icefall.ssl.labels", "--features", "layer", "--checkpoint", path,
         "--out-dir", tmp_path / "labels", "--prefix", "mini"),
    ]
    for args in runs:
        proc = _cli(*args)
        assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
        assert "Refusing to load" in proc.stderr and "posix.system" in proc.stderr, (args, proc.stderr[-2000:])
        assert not marker.exists(), args
    assert not (tmp_path / "out.pt").exists()


def test_our_checkpoints_load_with_plain_values(tmp_path):
    """Params with paths and numpy numbers, RNG states, optimizer: all plain, all load."""
    import numpy as np

    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    import enum

    class Mode(str, enum.Enum):
        FAST = "fast"

    params = AttributeDict(exp_dir=tmp_path, lr=np.float32(0.5), dims=(1, 2), ns=argparse.Namespace(a=1),
                           mode=Mode.FAST, seen={3})
    save_checkpoint(tmp_path / "c.pt", model, params=params, optimizer=opt)
    ckpt = load_file(tmp_path / "c.pt")
    assert ckpt["params"] == {"exp_dir": str(tmp_path), "lr": 0.5, "dims": (1, 2), "ns": {"a": 1},
                              "mode": "fast", "seen": [3]}
    assert torch.equal(ckpt["model"]["weight"], model.weight)
    assert ckpt["optimizer"]["state"][0]["exp_avg"].shape == (2, 3)


def test_checkpoints_of_before_still_load(tmp_path):
    """Files written before checkpoints were plain (numpy RNG key, Path params) still load:
    rebuilding arrays and paths runs no code of the file's choosing."""
    import numpy as np

    old = {"model": {"w": torch.ones(1)}, "params": {"exp_dir": tmp_path},
           "rng": {"numpy": np.random.get_state()}}
    torch.save(old, tmp_path / "old.pt")
    ckpt = load_file(tmp_path / "old.pt")
    assert ckpt["params"]["exp_dir"] == tmp_path
    assert np.array_equal(ckpt["rng"]["numpy"][1], np.random.get_state()[1])
