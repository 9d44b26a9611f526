"""Exact resume of the real models: zipformer-tiny pretrained HuBERT-style, SpidR and wav2vec 2.0
(its temperature schedule included), stopped at an epoch boundary or mid-epoch and resumed (data2vec
and BYOL-S: mid-epoch), ends bitwise equal (CPU) to the unbroken run: every
parameter and buffer, the running average, and every optimizer state tensor.

The hidden training state that no ``state_dict`` holds (Whiten's probability, switched inside
backward) must travel in the checkpoint for this to hold."""
from pathlib import Path

import pytest
import torch
from conftest import drop_checkpoints, scoped_tmp_dir

from icefall.models import get_objective
from icefall.ssl.pretrain import build_model, compute_loss, get_parser
from icefall.trainer import Trainer, make_optimizer, set_schedule_count
from icefall.utils import AttributeDict

NUM_CLASSES = 20
BATCHES_PER_EPOCH = 4
METHODS = ["hubert", "spidr", "wav2vec2"]


class Stop(Exception):
    """The job is killed before the next batch."""


def make_batches(with_labels: bool, seed=0, n=BATCHES_PER_EPOCH, B=2, T=120):
    """Fbank batches as SslDataset gives them, with random k-means labels at 100 Hz (HuBERT)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(n):
        lengths = torch.tensor([T, T - 17 * (i % 3)])
        x = torch.randn(B, T, 80, generator=g)
        labels = torch.randint(0, NUM_CLASSES, (B, T), generator=g)
        for b, n_b in enumerate(lengths.tolist()):
            x[b, n_b:] = 0.0
            labels[b, n_b:] = -100
        batch = {"inputs": x, "lengths": lengths, "cut_ids": [f"c{i}-{b}" for b in range(B)],
                 "seconds": float(lengths.sum()) / 100}
        if with_labels:
            batch.update(labels=labels, label_lengths=lengths)
        batches.append(batch)
    return batches


def run(exp_dir: Path, method: str, stop_after=None, train=True, **overrides) -> Trainer:
    args = get_parser(
        encoder="zipformer-tiny", frontend="fbank", encoder_overrides="frontend_layer3_channels=16",
        method=method, num_codebooks=2, codebook_size=16, ema_timescale=20.0,
        num_classes=NUM_CLASSES, label_rate=100.0, latent_vars=16, feature_pen_weight=0.0,
        # schedules (whitening limits, skip rates) move fast: each batch counts as 160 "batches"
        ref_duration=1.0, max_duration=160.0, warmup_batches=2, lr_batches=20,
    ).parse_args([])
    params = AttributeDict(vars(args))
    # keep_last_k=1: a resume reads only the newest checkpoint-<batch>.pt (30 MB each)
    params.update(exp_dir=exp_dir, num_epochs=3, save_every_n=2, keep_last_k=1, average_period=1,
                  log_interval=100, valid_interval=1000, tensorboard=False, seed=5)
    params.update(overrides)
    torch.manual_seed(0)
    model = build_model(params)
    optimizer, scheduler = make_optimizer(model, params)
    def before_batch(trainer):
        if stop_after is not None and trainer.params.batch_idx_train > stop_after:
            raise Stop
        set_schedule_count(trainer)

    dl = torch.utils.data.DataLoader(make_batches(method == "hubert"), batch_size=None, shuffle=True)
    trainer = Trainer(params, model, optimizer, scheduler, compute_loss, dl, None,
                      before_batch=before_batch, after_step=get_objective(method).after_step)
    try:
        if train:
            trainer.train()
    except Stop:
        pass
    return trainer


def plain_attributes(model: torch.nn.Module):
    """Every module's numbers and flags outside its state_dict (e.g. Whiten's probability)."""
    return {(name, k): v for name, m in model.named_modules() for k, v in vars(m).items()
            if isinstance(v, (bool, int, float)) and not k.startswith("_")}


def assert_same_training_state(a: Trainer, b: Trainer):
    assert a.params.batch_idx_train == b.params.batch_idx_train == 3 * BATCHES_PER_EPOCH
    hidden_a, hidden_b = plain_attributes(a.model), plain_attributes(b.model)
    bad = [k for k in hidden_a if hidden_a[k] != hidden_b[k]]
    assert not bad, [(k, hidden_a[k], hidden_b[k]) for k in bad[:5]]
    for what, x, y in (("model", a.model.state_dict(), b.model.state_dict()),
                       ("model_avg", a.model_avg.state_dict(), b.model_avg.state_dict())):
        assert x.keys() == y.keys()
        bad = [k for k in x if not torch.equal(x[k], y[k])]
        assert not bad, f"{what}: {len(bad)} tensors differ, e.g. {bad[:3]}: max diff " \
                        f"{max((x[k].double() - y[k].double()).abs().max().item() for k in bad):.3g}"
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k, v in sa[i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[i][k])), (i, k)


#: Small BYOL-S heads (the paper's 4096 -> 256 MLPs cost more than the tiny encoder).
OVERRIDES = {"byol": dict(projector_hidden_dim=64, projector_dim=16)}


class _Unbroken(dict):
    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, method: str) -> Trainer:
        self[method] = run(self.root / method, method, **OVERRIDES.get(method, {}))
        drop_checkpoints(self.root / method)  # the tests compare the Trainer in memory
        return self[method]


@pytest.fixture(scope="module")
def unbroken(request):
    """method -> the unbroken run's Trainer, run when first asked for."""
    return _Unbroken(scoped_tmp_dir(request, "unbroken"))


@pytest.mark.parametrize("method", METHODS)
def test_resume_at_epoch_boundary_is_bitwise_exact(tmp_path, unbroken, method):
    first = run(tmp_path, method, num_epochs=1)
    # Right after loading, the hidden state is what it was when epoch-1.pt was written.
    loaded = run(tmp_path, method, start_epoch=2, train=False)
    assert plain_attributes(loaded.model) == plain_attributes(first.model)
    resumed = run(tmp_path, method, start_epoch=2)
    assert_same_training_state(unbroken[method], resumed)


@pytest.mark.parametrize("method", METHODS + ["data2vec", "byol"])
def test_resume_mid_epoch_is_bitwise_exact(tmp_path, unbroken, method):
    over = OVERRIDES.get(method, {})
    first = run(tmp_path, method, stop_after=BATCHES_PER_EPOCH + 2, **over)  # killed in epoch 2
    assert (tmp_path / "checkpoint-6.pt").is_file() and not (tmp_path / "epoch-2.pt").exists()
    loaded = run(tmp_path, method, start_batch=6, train=False, **over)
    assert plain_attributes(loaded.model) == plain_attributes(first.model)
    resumed = run(tmp_path, method, start_batch=6, **over)
    assert_same_training_state(unbroken[method], resumed)
