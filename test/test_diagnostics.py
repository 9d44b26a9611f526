"""Training safety tools: --inf-check names the origin of a NaN/inf, bad batches are saved
(and load with weights_only=True), the OOM scan names the failing criterion."""
import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from icefall.diagnostics import InfCheck, save_batch, scan_pessimistic_batches_for_oom
from icefall.trainer import Trainer
from icefall.utils import AttributeDict, MetricsTracker


class LogOf(nn.Module):
    """log(x): -inf at 0, NaN below 0 from finite inputs."""

    def forward(self, x):
        return torch.log(x)


class Root(nn.Module):
    """sqrt(|x|): finite at 0, but its gradient there is infinite."""

    def forward(self, x):
        return x.abs().sqrt()


def test_inf_check_names_the_forward_origin():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), LogOf(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.fill_(-1.0)  # ReLU gives exact zeros, log gives -inf
        model[0].bias.zero_()
    check = InfCheck(model)
    model(torch.ones(2, 3)).sum()
    # Only the origin is reported, not every module downstream of it.
    assert check.reports == ["forward: 2 (LogOf) gave a non-finite output from finite inputs"]
    check.reports.clear()
    model(torch.ones(2, 3))  # a second pass reports again (one report per pass)
    assert len(check.reports) == 1
    check.remove()
    model(torch.ones(2, 3))
    assert len(check.reports) == 1


def test_inf_check_names_the_backward_origin():
    model = nn.Sequential(nn.Linear(2, 2), Root(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()  # Root sees exact zeros: finite output, infinite gradient
    check = InfCheck(model)
    loss = model(torch.ones(4, 2)).sum()
    assert check.reports == []  # the forward is finite
    loss.backward()
    assert check.reports[0] == (
        "backward: the gradient of output 0 of 0 is not finite (produced by the module that consumes it)"
    )
    assert "backward: parameter 0.weight has a non-finite gradient" in check.reports
    assert "backward: parameter 2.weight has a non-finite gradient" not in check.reports
    check.remove()


def test_inf_check_clean_model_reports_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    check = InfCheck(model)
    model(torch.randn(5, 3)).sum().backward()
    assert check.reports == []


def _batches(n=6):
    g = torch.Generator().manual_seed(0)
    return [
        {"inputs": torch.randn(2, 3, generator=g), "cut_ids": [f"cut-{i}-a", f"cut-{i}-b"],
         "tokens": [[1, 2], [3]], "supervisions": object()}
        for i in range(n)
    ]


def _trainer(tmp_path, compute_loss, **overrides):
    params = AttributeDict(exp_dir=Path(tmp_path), num_epochs=1, tensorboard=False, log_interval=100,
                           average_period=100, save_every_n=100, max_bad_batches=10)
    params.update(overrides)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(params, model, opt, None, compute_loss, _batches())


def test_non_finite_batches_are_saved_and_load_safely(tmp_path):
    def compute_loss(model, batch, is_training):
        loss = model(batch["inputs"]).pow(2).sum()
        if batch["cut_ids"][0].startswith(("cut-2", "cut-4")):
            loss = loss * float("inf")
        return loss, MetricsTracker({"frames": 2, "loss": float(loss.detach())})

    _trainer(tmp_path, compute_loss).train()
    saved = sorted(p.name for p in Path(tmp_path).glob("bad-batch-*.pt"))
    assert saved == ["bad-batch-3-0.pt", "bad-batch-5-0.pt"]  # global batch index, rank
    batch = torch.load(Path(tmp_path) / "bad-batch-3-0.pt", weights_only=True)
    assert batch["cut_ids"] == ["cut-2-a", "cut-2-b"]
    assert torch.equal(batch["inputs"], _batches()[2]["inputs"])
    assert batch["tokens"] == [[1, 2], [3]]
    assert isinstance(batch["supervisions"], str)  # objects are kept as their repr only


def test_saved_batches_are_capped(tmp_path):
    def always_nan(model, batch, is_training):
        return model(batch["inputs"]).sum() * float("nan"), MetricsTracker({"frames": 2})

    _trainer(tmp_path, always_nan, max_saved_batches=2).train()
    assert len(list(Path(tmp_path).glob("bad-batch-*.pt"))) == 2


def test_a_crashing_batch_is_saved_and_the_error_kept(tmp_path):
    def compute_loss(model, batch, is_training):
        if batch["cut_ids"][0] == "cut-1-a":
            raise RuntimeError("boom in the model")
        return model(batch["inputs"]).sum(), MetricsTracker({"frames": 2})

    with pytest.raises(RuntimeError, match="boom in the model"):
        _trainer(tmp_path, compute_loss).train()
    batch = torch.load(Path(tmp_path) / "bad-batch-2-0.pt", weights_only=True)
    assert batch["cut_ids"] == ["cut-1-a", "cut-1-b"]


def test_trainer_inf_check_option_reports(tmp_path, caplog):
    class NanAfterSteps(nn.Module):
        def forward(self, x):
            return torch.log(x - 100.0)  # NaN for any input here

    def compute_loss(model, batch, is_training):
        return model(batch["inputs"]).sum(), MetricsTracker({"frames": 2})

    params = AttributeDict(exp_dir=Path(tmp_path), num_epochs=1, tensorboard=False, inf_check=True)
    model = nn.Sequential(nn.Linear(3, 3), NanAfterSteps())
    trainer = Trainer(params, model, torch.optim.SGD(model.parameters(), lr=0.1), None, compute_loss, _batches(2))
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert "inf-check: forward: 1 (NanAfterSteps) gave a non-finite output from finite inputs" in caplog.text


def _lhotse_loader(durations):
    from lhotse import CutSet
    from lhotse.dataset import SimpleCutSampler
    from lhotse.testing.dummies import dummy_cut

    cuts = CutSet.from_cuts(dummy_cut(i, duration=d) for i, d in enumerate(durations))

    class Dataset(torch.utils.data.Dataset):
        def __getitem__(self, cuts):
            return {"inputs": torch.ones(len(cuts), 3), "cut_ids": [c.id for c in cuts],
                    "seconds": sum(c.duration for c in cuts)}

    sampler = SimpleCutSampler(cuts, max_duration=10.0)
    return torch.utils.data.DataLoader(Dataset(), sampler=sampler, batch_size=None)


def test_oom_scan_is_skipped_on_cpu(tmp_path):
    model = nn.Linear(3, 1)
    out = scan_pessimistic_batches_for_oom(model, _lhotse_loader([1.0, 2.0]), None, None,
                                           torch.device("cpu"), tmp_path, None)
    assert out is None


def test_oom_scan_names_the_criterion_and_saves_the_batch(tmp_path):
    # The logic runs on CPU with a fake "cuda" device; a loss that raises CUDA's OOM message on
    # the largest batch stands in for the GPU running out of memory.
    import contextlib

    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def compute_loss(model, batch, is_training):
        if batch["seconds"] > 8.0:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(batch["inputs"]).sum(), None

    loader = _lhotse_loader([1.0, 2.0, 3.0, 4.5, 4.5])  # batches of <= 10 s: the largest is 9 s
    with pytest.raises(RuntimeError, match=r"Out of memory on the pessimistic batch '(\w+)' .*--max-duration"):
        scan_pessimistic_batches_for_oom(model, loader, compute_loss, opt, torch.device("cuda"), tmp_path,
                                         contextlib.nullcontext)
    saved = list(Path(tmp_path).glob("oom-batch-*.pt"))
    assert len(saved) == 1
    assert torch.load(saved[0], weights_only=True)["seconds"] == 9.0


def test_save_batch_is_atomic_and_plain(tmp_path):
    path = save_batch({"x": torch.arange(3), "meta": {"a": (1, 2.5, "s")}}, tmp_path / "b.pt")
    assert [p.name for p in Path(tmp_path).iterdir()] == ["b.pt"]
    b = torch.load(path, weights_only=True)
    assert torch.equal(b["x"], torch.arange(3)) and b["meta"]["a"] == [1, 2.5, "s"]
