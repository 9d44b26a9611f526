"""The shared training loop: exact resume, non-finite handling, fp16 scale policy, averaging."""
import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from icefall.checkpoint import load_file
from icefall.trainer import Trainer, TrainingError
from icefall.utils import AttributeDict, MetricsTracker


class Stop(Exception):
    pass


def make_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def make_data(n=24):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def make_loss(stop_at=None, poison=()):
    calls = {"train": 0}

    def compute_loss(model, batch, is_training):
        if is_training:
            calls["train"] += 1
            if stop_at is not None and calls["train"] > stop_at:
                raise Stop  # the job is killed before this batch
        x, y = batch
        loss = ((model(x) - y) ** 2).sum()
        if is_training and calls["train"] in poison:
            loss = loss * float("nan")
        info = MetricsTracker({"frames": x.shape[0], "loss": loss.detach().item(), "seconds": 1.0})
        return loss, info

    return compute_loss


def run(exp_dir, stop_at=None, poison=(), dl=None, **overrides):
    params = AttributeDict(
        exp_dir=Path(exp_dir), num_epochs=2, accum_grad=2, save_every_n=4, average_period=2,
        log_interval=3, valid_interval=5, tensorboard=False, seed=3,
    )
    params.update(overrides)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.1 * s))
    if dl is None:
        dl = torch.utils.data.DataLoader(make_data(), batch_size=4, shuffle=True)
    valid = torch.utils.data.DataLoader(make_data(8), batch_size=4)
    trainer = Trainer(params, model, opt, sched, make_loss(stop_at, poison), dl, valid)
    try:
        trainer.train()
    except Stop:
        pass
    return trainer


def params_of(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_mid_epoch_is_bitwise_exact(tmp_path):
    full = run(tmp_path / "full")
    assert full.params.batch_idx_train == 12
    # 6 batches per epoch; stop after global batch 8 (mid epoch 2), resume from checkpoint-8.pt
    run(tmp_path / "split", stop_at=8)
    assert (tmp_path / "split" / "checkpoint-8.pt").is_file()
    resumed = run(tmp_path / "split", start_batch=8)
    assert resumed.params.batch_idx_train == 12
    assert_bitwise_equal(params_of(full.model), params_of(resumed.model))
    assert_bitwise_equal(params_of(full.model_avg), params_of(resumed.model_avg))
    # and the resumed run is not trivially equal: training moved the weights
    assert not torch.equal(params_of(make_model())["0.weight"], params_of(full.model)["0.weight"])


def test_resume_from_epoch_is_bitwise_exact(tmp_path):
    full = run(tmp_path / "full", num_epochs=3)
    run(tmp_path / "split", num_epochs=1)
    resumed = run(tmp_path / "split", num_epochs=3, start_epoch=2)
    assert_bitwise_equal(params_of(full.model), params_of(resumed.model))
    ck = load_file(tmp_path / "split" / "epoch-3.pt")
    assert ck["params"]["batch_idx_train"] == 18
    for f in ("best-train-loss.pt", "best-valid-loss.pt"):
        assert (tmp_path / "split" / f).is_file()


def test_resume_with_lhotse_sampler_is_exact(tmp_path):
    pytest.importorskip("lhotse")
    from lhotse import CutSet
    from lhotse.dataset import DynamicBucketingSampler
    from lhotse.testing.dummies import dummy_cut

    cuts = CutSet.from_cuts(dummy_cut(i, duration=1.0 + (i % 5) * 0.5) for i in range(40))
    g = torch.Generator().manual_seed(5)
    table = torch.randn(40, 4, generator=g)

    class CutIdDataset(torch.utils.data.Dataset):
        def __getitem__(self, batch_cuts):
            idx = torch.tensor([int(c.id.split("-")[-1]) for c in batch_cuts])
            x = table[idx]
            return x, x.sum(1, keepdim=True)

    def make_dl():
        sampler = DynamicBucketingSampler(cuts, max_duration=8.0, shuffle=True, num_buckets=2, seed=11)
        return torch.utils.data.DataLoader(CutIdDataset(), sampler=sampler, batch_size=None)

    full = run(tmp_path / "full", dl=make_dl(), save_every_n=2)
    n = full.params.batch_idx_train
    stop = (n // 2) // 2 * 2 + 2  # an even batch in the second half
    run(tmp_path / "split", dl=make_dl(), save_every_n=2, stop_at=stop)
    resumed = run(tmp_path / "split", dl=make_dl(), save_every_n=2, start_batch=stop)
    assert resumed.params.batch_idx_train == n
    assert_bitwise_equal(params_of(full.model), params_of(resumed.model))


def test_non_finite_losses_are_skipped_and_counted(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    t = run(tmp_path / "exp", poison=(2, 5), num_epochs=1)
    assert t.num_bad_batches == 2
    assert t.params.batch_idx_train == 6
    for p in t.model.parameters():
        assert torch.isfinite(p).all()
    assert "non-finite loss" in caplog.text
    # the counts survive a restart (they are in the checkpoint)
    assert run(tmp_path / "exp", num_epochs=2).num_bad_batches == 2


def test_too_many_non_finite_losses_stop_with_saved_model(tmp_path):
    with pytest.raises(TrainingError, match="consecutive"):
        run(tmp_path / "exp", poison=tuple(range(1, 13)), max_bad_batches=3)
    assert (tmp_path / "exp" / "bad-model-0.pt").is_file()


class InfGrad(torch.autograd.Function):
    """Identity-sum forward whose backward overflows, as a diverging fp16 run does."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sum()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return torch.full_like(x, float("inf"))


def test_fp16_grad_scale_collapse_stops_with_saved_model(tmp_path):
    def inf_grad_loss(model, batch, is_training):
        x, _ = batch
        return InfGrad.apply(model(x).float()), MetricsTracker({"frames": x.shape[0], "loss": 1.0})

    # The policy doubles a small scale every 2nd batch; overflow halves it every batch, so the
    # scale still collapses, and the loop must stop with a clear error and a saved model.
    params = AttributeDict(exp_dir=tmp_path / "exp", num_epochs=50, tensorboard=False,
                           use_fp16=True, grad_scale_check_interval=2, max_bad_batches=10**6)
    model = make_model()
    before = params_of(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dl = torch.utils.data.DataLoader(make_data(), batch_size=4)
    trainer = Trainer(params, model, opt, None, inf_grad_loss, dl)
    with pytest.raises(TrainingError, match="grad scale collapsed"):
        trainer.train()
    assert (tmp_path / "exp" / "bad-model-0.pt").is_file()
    assert (tmp_path / "exp" / "bad-model-first-warning-0.pt").is_file()
    assert_bitwise_equal(before, params_of(trainer.model))  # no inf update was ever applied


def test_bf16_autocast_trains(tmp_path):
    t = run(tmp_path / "exp", use_bf16=True, num_epochs=1)
    assert t.num_bad_batches == 0
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="multiple of --accum-grad"):
        run(tmp_path / "exp", save_every_n=3, accum_grad=2)
    with pytest.raises(ValueError, match="one of"):
        run(tmp_path / "exp", use_fp16=True, use_bf16=True)


@pytest.mark.parametrize("option, value", [
    ("log_interval", 0), ("accum_grad", 0), ("average_period", 0), ("valid_interval", -1),
    ("save_every_n", 0), ("max_duration", 0.0), ("num_epochs", -1), ("stop_time_hours", -1.0),
])
def test_options_that_would_fail_late_or_do_nothing_are_rejected(tmp_path, option, value):
    """Before: ZeroDivisionError mid-epoch, an AssertionError after the model was built, or
    (--num-epochs -1) a silent no-op. Now a ValueError naming the option, before training."""
    name = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=name):
        run(tmp_path / "exp", **{option: value})
    assert not list((tmp_path / "exp").glob("*.pt"))


# ---------------------------------------------------------------------- one run per exp dir
def test_rerun_auto_resumes_from_the_newest_checkpoint(tmp_path, caplog):
    """Rerunning the same command (no --start-*) continues where the run stopped, bitwise."""
    caplog.set_level(logging.INFO)
    full = run(tmp_path / "full", num_epochs=3)
    run(tmp_path / "split", num_epochs=3, stop_at=8)  # killed mid epoch 2: checkpoint-8.pt
    resumed = run(tmp_path / "split", num_epochs=3)
    assert "continuing from" in caplog.text and "checkpoint-8.pt" in caplog.text
    assert resumed.params.batch_idx_train == 18
    assert_bitwise_equal(params_of(full.model), params_of(resumed.model))
    # at an epoch boundary: epoch-2.pt is later than checkpoint-12.pt (= its last batch)
    run(tmp_path / "epochs", num_epochs=2)
    resumed = run(tmp_path / "epochs", num_epochs=3)
    assert resumed.params.start_epoch == 3
    assert_bitwise_equal(params_of(full.model), params_of(resumed.model))
    # a finished run reruns as a no-op
    again = run(tmp_path / "epochs", num_epochs=3)
    assert again.params.batch_idx_train == 18 and "Training is complete" in caplog.text


def test_fresh_start_over_checkpoints_needs_overwrite(tmp_path, caplog):
    run(tmp_path / "exp", num_epochs=1)
    with pytest.raises(FileExistsError, match="--overwrite true"):
        run(tmp_path / "exp", num_epochs=1, auto_resume=False)
    caplog.set_level(logging.WARNING)
    fresh = run(tmp_path / "exp", num_epochs=1, overwrite=True)
    assert "deleting" in caplog.text
    assert fresh.params.batch_idx_train == 6  # trained from scratch, not resumed
    assert_bitwise_equal(params_of(run(tmp_path / "other", num_epochs=1).model), params_of(fresh.model))


def test_resume_with_changed_options_logs_each_difference(tmp_path, caplog):
    run(tmp_path / "exp", num_epochs=1, base_lr=0.045, max_duration=160.0)
    caplog.set_level(logging.WARNING)
    run(tmp_path / "exp", num_epochs=2, base_lr=0.01, max_duration=100.0)
    changed = [r.getMessage() for r in caplog.records if "changed option" in r.getMessage()]
    assert any("--base-lr 0.01 (checkpoint: 0.045)" in m for m in changed), changed
    assert any("--max-duration 100.0 (checkpoint: 160.0)" in m for m in changed), changed
    assert any("--num-epochs 2 (checkpoint: 1)" in m for m in changed), changed
    assert len(changed) == 3, changed


def test_start_epoch_after_a_kill_while_saving_points_at_the_newest_checkpoint(tmp_path):
    run(tmp_path / "exp", num_epochs=2, save_every_n=2)
    (tmp_path / "exp" / "epoch-2.pt").unlink()  # killed while writing it: it never appeared
    with pytest.raises(FileNotFoundError, match=r"epoch-2.pt does not exist.*checkpoint-12.pt.*--start-batch 12"):
        run(tmp_path / "exp", num_epochs=3, start_epoch=3)


@pytest.mark.parametrize("valid", [[], [None, None]])
def test_validation_that_reads_nothing_is_an_error(tmp_path, valid):
    """An empty or all-unreadable validation set (e.g. its feature files missing) used to log
    "best valid loss 0" and save best-valid-loss.pt from it."""
    params = AttributeDict(exp_dir=tmp_path / "exp", num_epochs=1, tensorboard=False)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dl = torch.utils.data.DataLoader(make_data(), batch_size=4)
    trainer = Trainer(params, model, opt, None, make_loss(), dl, valid)
    with pytest.raises(TrainingError, match="Validation read nothing"):
        trainer.train()
    assert not (tmp_path / "exp" / "best-valid-loss.pt").exists()


def test_compile_resumes_bitwise_and_checkpoints_keep_plain_keys(tmp_path):
    """--compile true: the forward runs compiled (in place), checkpoints hold the module's own
    keys (no ``_orig_mod.`` prefix), and a mid-epoch resume is bitwise exact."""
    import torch._dynamo.config as dynamo_config

    torch._dynamo.reset()
    dynamo_config.recompile_limit = 8  # dynamo's default
    full = run(tmp_path / "full", compile=True)
    assert full.model._compiled_call_impl is not None
    # Zipformer's schedules recompile at each breakpoint (22 in zipformer-ssl-base): not 8
    assert dynamo_config.recompile_limit == 64
    run(tmp_path / "split", stop_at=8, compile=True)
    resumed = run(tmp_path / "split", start_batch=8, compile=True)
    assert_bitwise_equal(params_of(full.model), params_of(resumed.model))
    assert_bitwise_equal(params_of(full.model_avg), params_of(resumed.model_avg))
    ck = load_file(tmp_path / "split" / "checkpoint-8.pt")
    assert set(ck["model"]) == set(make_model().state_dict()) == set(ck["model_avg"])


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_stop_time_stops_saves_and_resumes_exactly(tmp_path, caplog, monkeypatch, clock):
    """--stop-time-hours: training stops at the first optimizer step past the budget (summed over
    resumes, on the chosen clock), leaves a resumable checkpoint-<batch>.pt and no epoch file for
    the part epoch; raising the budget continues bitwise as if it had never stopped."""
    caplog.set_level(logging.INFO)
    ticks = {"n": 0}

    def fake_clock(self):  # 100 s per reading: read twice as train() starts, then at each step
        assert self.params.stop_time_hours == 0 or self.params.stop_time_clock == clock
        ticks["n"] += 1
        return 100.0 * ticks["n"]

    monkeypatch.setattr(Trainer, "_clock", fake_clock)
    full = run(tmp_path / "full", num_epochs=3)
    # 6 batches (3 steps) per epoch; after step k, 100 * (k + 1) s have passed, so a budget of
    # 0.2 h (720 s) stops at step 7 (800 s): batch 14, in epoch 3, between the every-4 checkpoints
    t = run(tmp_path / "split", num_epochs=3, stop_time_hours=0.2, stop_time_clock=clock)
    assert t.stopped_by_time and t.params.batch_idx_train == 14
    assert abs(t.params.train_time - 800.0) < 1e-6
    assert (tmp_path / "split" / "checkpoint-14.pt").is_file()
    assert (tmp_path / "split" / "epoch-2.pt").is_file() and not (tmp_path / "split" / "epoch-3.pt").exists()
    assert "stopping" in caplog.text
    # the same command again: the budget is spent, nothing trains
    again = run(tmp_path / "split", num_epochs=3, stop_time_hours=0.2, stop_time_clock=clock)
    assert again.params.batch_idx_train == 14 and "was spent" in caplog.text
    # a larger budget goes on from checkpoint-14.pt, bitwise
    resumed = run(tmp_path / "split", num_epochs=3, stop_time_hours=1.0, stop_time_clock=clock)
    assert resumed.params.batch_idx_train == 18 and not resumed.stopped_by_time
    assert_bitwise_equal(params_of(full.model), params_of(resumed.model))
    assert_bitwise_equal(params_of(full.model_avg), params_of(resumed.model_avg))
