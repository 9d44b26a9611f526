"""Distributed training: torchrun (env vars, one or many nodes) or ``--world-size N`` on one node.

NCCL on GPUs, gloo on CPUs. Recipes write ``run(rank, world_size, args)`` and call
``launch(run, args)``; under torchrun ``rank`` is the global rank and the device index is
``LOCAL_RANK``. ``launch`` also leaves the process group when ``run`` returns.
"""
from __future__ import annotations

import datetime
import gc
import logging
import os
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def local_rank(rank: int) -> int:
    """Device index of this process: LOCAL_RANK under torchrun, else the rank (one node)."""
    return int(os.environ["LOCAL_RANK"]) if under_torchrun() else rank


def get_device(rank: int = 0) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank(rank))
    return torch.device("cpu")


def setup_dist(
    rank: int,
    world_size: int,
    master_port: Optional[int] = None,
    backend: Optional[str] = None,
    timeout_minutes: int = 30,
) -> None:
    """Join the process group (no-op for world_size 1).

    torchrun sets MASTER_ADDR/MASTER_PORT; for ``--world-size`` on one node we set them.
    """
    if world_size <= 1:
        return
    if not under_torchrun():
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ.setdefault("MASTER_PORT", str(master_port or 12354))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank(rank))
    dist.init_process_group(
        backend,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    logging.debug(f"rank {rank}/{world_size} joined ({backend})")


def cleanup_dist() -> None:
    """Leave the process group together: the barrier keeps a rank that finished early (rank 0
    still writes its last checkpoint) from tearing its gloo/NCCL connections down under a peer."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _run_and_leave(rank: int, run: Callable[[int, int, object], None], world_size: int, args) -> None:
    """One process's whole life: train, leave the group, then free what still holds it.

    A DDP model keeps its process group alive after ``destroy_process_group``; left to the
    interpreter's shutdown, gloo's worker threads can then abort the process (SIGABRT,
    "terminate called without an active exception") after training succeeded. The
    ``gc.collect`` frees the trainer's reference cycles while the interpreter still runs.
    """
    run(rank, world_size, args)
    cleanup_dist()
    gc.collect()


def launch(run: Callable[[int, int, object], None], args) -> None:
    """Run ``run(rank, world_size, args)`` in every process.

    - under torchrun: once in this process, rank/world size from the environment;
    - ``args.world_size > 1``: spawn that many local processes;
    - otherwise: once, rank 0 of 1.
    """
    if under_torchrun():
        _run_and_leave(int(os.environ["RANK"]), run, int(os.environ["WORLD_SIZE"]), args)
        return
    world_size = int(getattr(args, "world_size", 1))
    if world_size > 1:
        mp.spawn(_run_and_leave, args=(run, world_size, args), nprocs=world_size, join=True)
    else:
        run(0, 1, args)
