"""2-process gloo DDP on CPU gives the same parameters as one process on the same global batch;
``launch`` leaves the process group and frees the DDP model before the process exits."""
import gc
import socket
import types
import weakref
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from icefall.checkpoint import load_file
from icefall.dist import _run_and_leave, launch, setup_dist
from icefall.trainer import Trainer
from icefall.utils import AttributeDict, MetricsTracker

GLOBAL_BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6 * GLOBAL_BATCH, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]])


def _mean_loss(model, batch, is_training):
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()  # per-rank mean: DDP's gradient average = global mean
    return loss, MetricsTracker({"frames": 1, "loss": loss.item()})


def _train(rank: int, world_size: int, args: types.SimpleNamespace) -> None:
    """A recipe's ``run``: ``launch`` calls it in each process and leaves the group after it."""
    exp_dir, port = args.exp_dir, args.port
    torch.set_num_threads(1)
    setup_dist(rank, world_size, master_port=port)
    x, y = _data()
    shard = GLOBAL_BATCH // world_size
    batches = [
        (x[i + rank * shard : i + (rank + 1) * shard], y[i + rank * shard : i + (rank + 1) * shard])
        for i in range(0, len(x), GLOBAL_BATCH)
    ]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    params = AttributeDict(exp_dir=Path(exp_dir), num_epochs=2, tensorboard=False, seed=1)
    Trainer(params, model, opt, None, _mean_loss, batches, rank=rank, world_size=world_size).train()


def test_ddp_two_processes_match_one(tmp_path):
    launch(_train, types.SimpleNamespace(world_size=1, exp_dir=str(tmp_path / "one"), port=0))
    launch(_train, types.SimpleNamespace(world_size=2, exp_dir=str(tmp_path / "two"), port=_free_port()))
    one = load_file(tmp_path / "one" / "epoch-2.pt")["model"]
    two = load_file(tmp_path / "two" / "epoch-2.pt")["model"]
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k
    # training moved the weights, so equality is not vacuous
    assert not torch.allclose(one["0.weight"], init[0].weight, atol=1e-3)


def _ddp_in_a_cycle(rank: int, world_size: int, refs: list) -> None:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=rank, world_size=world_size)
    model = nn.parallel.DistributedDataParallel(nn.Linear(2, 2))
    model(torch.randn(3, 2)).sum().backward()
    trainer = types.SimpleNamespace(model=model)
    trainer.me = trainer  # a reference cycle, as a trainer and its callbacks make
    refs.append(weakref.ref(model))


def test_a_process_leaves_the_group_and_frees_ddp_when_run_returns():
    """Left to interpreter shutdown, a DDP model still holding its gloo group could abort a
    successful run (seen in CI: SIGABRT after the last checkpoint)."""
    refs = []
    gc.disable()  # only the explicit collection may free the cycle
    try:
        _run_and_leave(0, _ddp_in_a_cycle, 1, refs)
        assert not dist.is_initialized()
        assert refs[0]() is None
    finally:
        gc.enable()
