import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from icefall import checkpoint as ckpt


def _model(value: float) -> nn.Module:
    m = nn.Linear(2, 2)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(value)
    return m


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    f = tmp_path / "epoch-1.pt"
    ckpt.save_checkpoint(f, _model(1.0), params={"batch_idx_train": 1})
    real_save = torch.save

    def crashing_save(obj, fileobj, *a, **k):
        fileobj.write(b"partial bytes")  # the process dies mid-write
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(f, _model(2.0), params={"batch_idx_train": 2})
    monkeypatch.setattr(torch, "save", real_save)
    loaded = ckpt.load_file(f)
    assert torch.all(loaded["model"]["weight"] == 1.0)
    assert loaded["params"]["batch_idx_train"] == 1
    assert sorted(os.listdir(tmp_path)) == ["epoch-1.pt"]  # no temp file left behind


def test_truncated_checkpoint_error_names_file(tmp_path):
    f = tmp_path / "epoch-3.pt"
    f.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="epoch-3.pt"):
        ckpt.load_file(f)
    with pytest.raises(FileNotFoundError, match="epoch-4.pt"):
        ckpt.load_file(tmp_path / "epoch-4.pt")


def test_average_checkpoints_matches_hand_average(tmp_path):
    files = []
    for i, v in enumerate([1.0, 2.0, 6.0]):
        f = tmp_path / f"epoch-{i + 1}.pt"
        m = _model(v)
        ckpt.save_checkpoint(f, m, params={"batch_idx_train": i})
        files.append(f)
    avg = ckpt.average_checkpoints(files)
    assert torch.allclose(avg["weight"], torch.full((2, 2), 3.0))
    assert torch.allclose(avg["bias"], torch.full((2,), 3.0))


def test_running_average_and_difference_method(tmp_path):
    """model_avg after n batches = mean of snapshots every p batches; the difference method
    recovers the mean over (start, end]."""
    p = 2
    model = _model(0.0)
    model_avg = _model(0.0).double()
    snapshots = []
    files = {}
    for batch in range(1, 13):
        with torch.no_grad():
            model.weight.fill_(float(batch ** 2))  # any trajectory
            model.bias.fill_(float(-batch))
        if batch % p == 0:
            ckpt.update_averaged_model(batch, p, model, model_avg)
            snapshots.append(model.weight.detach().clone().double())
            assert torch.allclose(model_avg.weight, torch.stack(snapshots).mean(0))
        if batch in (4, 12):
            f = tmp_path / f"checkpoint-{batch}.pt"
            ckpt.save_checkpoint(f, model, model_avg=model_avg, params={"batch_idx_train": batch})
            files[batch] = f
    avg = ckpt.average_checkpoints_with_averaged_model(files[4], files[12])
    hand = torch.stack(snapshots[2:]).mean(0)  # snapshots at 6, 8, 10, 12
    assert torch.allclose(avg["weight"].double(), hand)
    assert torch.allclose(avg["bias"].double(), torch.full((2,), -9.0, dtype=torch.float64))
    with pytest.raises(ValueError):
        ckpt.average_checkpoints_with_averaged_model(files[12], files[4])

    # decode.py --iter 12 --avg 1 --use-averaged-model picks checkpoint-4 (the next older) and 12
    sd = ckpt.averaged_state_dict_for_decoding(tmp_path, iteration=12, avg=1)
    assert torch.allclose(sd["weight"].double(), hand)


def test_keep_last_k_and_find(tmp_path):
    m = _model(0.0)
    for b in (100, 200, 300, 400):
        ckpt.save_checkpoint_with_global_batch_idx(tmp_path, b, model=m, params={"batch_idx_train": b})
    assert [Path(f).name for f in ckpt.find_checkpoints(tmp_path)] == [
        "checkpoint-400.pt", "checkpoint-300.pt", "checkpoint-200.pt", "checkpoint-100.pt"]
    assert [Path(f).name for f in ckpt.find_checkpoints(tmp_path, iteration=-250)] == [
        "checkpoint-200.pt", "checkpoint-100.pt"]
    ckpt.remove_checkpoints(tmp_path, topk=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-300.pt", "checkpoint-400.pt"]


def test_epoch_averaging_for_decoding(tmp_path):
    for e, v in enumerate([3.0, 5.0, 10.0], start=1):
        ckpt.save_checkpoint(tmp_path / f"epoch-{e}.pt", _model(v), params={"batch_idx_train": e})
    sd = ckpt.averaged_state_dict_for_decoding(tmp_path, epoch=3, avg=2, use_averaged_model=False)
    assert torch.allclose(sd["weight"], torch.full((2, 2), 7.5))
    with pytest.raises(ValueError):
        ckpt.averaged_state_dict_for_decoding(tmp_path, epoch=3, avg=4, use_averaged_model=False)
