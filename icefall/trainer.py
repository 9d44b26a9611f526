"""The shared training loop that every recipe's pretrain.py / finetune.py calls.

A recipe supplies a model, an optimizer, a scheduler (Eden or any object with ``step_batch`` /
``step_epoch``, or a torch LR scheduler), a ``compute_loss(model, batch, is_training) ->
(loss, info)`` function and data loaders. The loop adds what every run needs: gradient
accumulation, fp16/bf16 autocast with a GradScaler policy, non-finite detection, validation,
tensorboard, throughput, checkpoints, the running-average model, and exact resume.

Exact resume: every epoch starts by seeding with ``seed + epoch - 1`` and setting the sampler's
epoch; a mid-epoch checkpoint stores the sampler position and the RNG states, which are put back
after that seeding. With ``num_workers=0`` (or datasets whose randomness does not live in worker
processes) ``--start-batch B`` continues bitwise as if the run had never stopped.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from icefall.checkpoint import (
    copy_checkpoint,
    find_checkpoints,
    find_epoch_checkpoints,
    get_training_state,
    load_checkpoint,
    newest_checkpoint,
    remove_checkpoints,
    save_checkpoint,
    save_checkpoint_with_global_batch_idx,
    set_training_state,
    to_plain,
    update_averaged_model,
)
from icefall.diagnostics import InfCheck, save_batch, scan_pessimistic_batches_for_oom
from icefall.dist import get_device, setup_dist
from icefall.expdir import lock_exp_dir, remove_stale_temp_files, unlock_exp_dir
from icefall.env import log_env_info, setup_cpu_memory
from icefall.utils import (
    AttributeDict,
    MetricsTracker,
    fix_random_seed,
    get_rng_state,
    set_rng_state,
    setup_logger,
    str2bool,
)

ComputeLoss = Callable[[nn.Module, Any, bool], Tuple[torch.Tensor, MetricsTracker]]


class TrainingError(RuntimeError):
    """Training cannot go on (collapsing grad scale, too many non-finite losses)."""


def check_training_options(params: AttributeDict) -> None:
    """Refuse options that would fail late (ZeroDivisionError mid-epoch, an assertion after the
    model is built) or silently do nothing; the error names the option. Cheap: call it before
    building the model (``setup_run`` does) and again in ``Trainer``."""
    for name in ("log_interval", "valid_interval", "save_every_n", "accum_grad", "average_period",
                 "max_bad_batches", "max_duration"):
        value = params.get(name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    start, num = params.get("start_epoch", 1), params.get("num_epochs", 1)
    if start < 1 or params.get("start_batch", 0) < 0:
        raise ValueError(f"--start-epoch must be >= 1 and --start-batch >= 0, got {start}, {params.get('start_batch')}")
    if num < start:
        raise ValueError(f"--num-epochs {num} < --start-epoch {start}: there is nothing to train")
    if params.get("stop_time_hours", 0.0) < 0:
        raise ValueError(f"--stop-time-hours must be >= 0 (0: no limit), got {params.stop_time_hours}")
    if params.get("use_fp16") and params.get("use_bf16"):
        raise ValueError("Choose one of --use-fp16 and --use-bf16")
    save_every_n, accum_grad = params.get("save_every_n"), params.get("accum_grad")
    if save_every_n is not None and accum_grad is not None and save_every_n % accum_grad != 0:
        raise ValueError(
            f"--save-every-n ({save_every_n}) must be a multiple of --accum-grad "
            f"({accum_grad}) so that checkpoints fall on optimizer steps"
        )


# Bookkeeping that differs between a run and its resumption by design.
_NOT_OPTIONS = {
    "start_epoch", "start_batch", "auto_resume", "overwrite", "exp_dir", "master_port",
    "batch_idx_train", "batch_idx_in_epoch", "cur_epoch", "best_train_loss", "best_valid_loss",
    "best_train_epoch", "best_valid_epoch", "consecutive_bad", "num_bad_batches", "train_time",
}


def log_changed_options(saved: Dict[str, Any], params: AttributeDict) -> List[str]:
    """Log (warning) each option whose value differs from the checkpoint's; returns the lines."""
    now = to_plain(dict(params))
    lines = []
    for k in sorted(set(saved) | set(now)):
        if k in _NOT_OPTIONS or saved.get(k) == now.get(k):
            continue
        if k not in saved:
            lines.append(f"--{k.replace('_', '-')} {now[k]!r} (not in the checkpoint)")
        elif k not in now:
            lines.append(f"--{k.replace('_', '-')} unset (checkpoint: {saved[k]!r})")
        else:
            lines.append(f"--{k.replace('_', '-')} {now[k]!r} (checkpoint: {saved[k]!r})")
    for line in lines:
        logging.warning(f"Resuming with a changed option: {line}")
    return lines


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every training script shares (icefall names)."""
    g = parser.add_argument_group("training")
    g.add_argument("--world-size", type=int, default=1, help="GPUs (or CPU processes) on this node; ignored under torchrun")
    g.add_argument("--master-port", type=int, default=12354, help="Rendezvous port for --world-size > 1")
    g.add_argument("--num-epochs", type=int, default=30)
    g.add_argument("--start-epoch", type=int, default=1, help="Resume from epoch-(N-1).pt when N > 1")
    g.add_argument("--start-batch", type=int, default=0, help="Resume from checkpoint-N.pt when N > 0 (overrides --start-epoch)")
    g.add_argument("--auto-resume", type=str2bool, default=True, help="Without --start-*: continue from the newest epoch-N.pt / checkpoint-B.pt in --exp-dir")
    g.add_argument("--overwrite", type=str2bool, default=False, help="Start afresh although --exp-dir has checkpoints (they are deleted)")
    g.add_argument("--exp-dir", type=Path, default=Path("exp"), help="Checkpoints, logs and tensorboard go here; one run at a time (run.lock)")
    g.add_argument("--base-lr", type=float, default=0.045)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--accum-grad", type=int, default=1, help="Batches per optimizer step")
    g.add_argument("--use-fp16", type=str2bool, default=False, help="float16 autocast with a GradScaler")
    g.add_argument("--use-bf16", type=str2bool, default=False, help="bfloat16 autocast (no scaler needed)")
    g.add_argument("--compile", type=str2bool, default=False,
                   help="torch.compile the model's forward (in place: checkpoints keep their keys); the first "
                        "batches of new shapes are slow while they compile (docs/training.md)")
    g.add_argument("--log-interval", type=int, default=50)
    g.add_argument("--valid-interval", type=int, default=3000, help="Validate every N batches (and at each epoch end)")
    g.add_argument("--save-every-n", type=int, default=4000, help="Write checkpoint-<batch>.pt every N batches")
    g.add_argument("--keep-last-k", type=int, default=30, help="Keep this many checkpoint-<batch>.pt files")
    g.add_argument("--average-period", type=int, default=200, help="Update the running-average model every N batches")
    g.add_argument("--max-bad-batches", type=int, default=20, help="Stop after this many consecutive non-finite batches")
    g.add_argument("--stop-time-hours", type=float, default=0.0,
                   help="Stop after this much training time, summed over resumes (0: no limit; fairseq's option); the "
                        "model is then the last checkpoint-<batch>.pt, written when the budget runs out")
    g.add_argument("--stop-time-clock", default="wall", choices=["wall", "cpu"],
                   help="What --stop-time-hours counts: wall-clock seconds, or this process's CPU seconds (all its "
                        "threads), a budget that other jobs on a shared machine do not eat into")
    g.add_argument("--tensorboard", type=str2bool, default=True)
    g.add_argument("--inf-check", type=str2bool, default=False, help="Log the module where a non-finite value first appears (slow; debugging)")
    g.add_argument("--scan-oom", type=str2bool, default=True, help="On CUDA, run the most pessimistic batches before training to catch out-of-memory early")


def training_parser(
    description: str, add_model_arguments: Callable[[argparse.ArgumentParser], None], **defaults
) -> argparse.ArgumentParser:
    """The parser of a training script: training, optimizer, model and data options, with the
    recipe's own ``defaults`` (e.g. ``encoder="zipformer-tiny"``)."""
    from icefall.data.datamodule import DataModule

    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_training_arguments(parser)
    add_optimizer_arguments(parser)
    add_model_arguments(parser)
    DataModule.add_arguments(parser)
    parser.set_defaults(**defaults)
    return parser


def autocast_context(device: torch.device, use_fp16: bool, use_bf16: bool):
    """Mixed-precision context (fp16 on CUDA; bf16 anywhere), or nothing."""
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if use_fp16:
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _step_scheduler_batch(scheduler, batch_idx_train: int) -> None:
    if scheduler is None:
        return
    if hasattr(scheduler, "step_batch"):
        scheduler.step_batch(batch_idx_train)
    else:
        scheduler.step()


def _grads_finite(params: Iterable[torch.Tensor]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)
    return bool(torch.isfinite(torch.stack(norms)).all())


class Trainer:
    """Runs epochs ``params.start_epoch .. params.num_epochs`` (see module docstring).

    Args:
      params: AttributeDict with the options of ``add_training_arguments`` (exp_dir, ...).
      model: the model, not yet wrapped in DDP; it is moved to ``device``.
      optimizer, scheduler: built by the recipe from ``model.parameters()``.
      compute_loss: ``(model, batch, is_training) -> (loss, info)``; ``loss`` is a scalar (a
        sum over frames, as in icefall), ``info`` a MetricsTracker with ``frames`` and
        optionally ``seconds`` (audio seconds, for throughput).
      train_dl: iterable of batches; its ``sampler`` (if any) may have ``set_epoch`` and
        ``state_dict``/``load_state_dict`` (lhotse samplers do).
      valid_dl: optional validation loader.
      after_step: optional callback ``(trainer) -> None`` after every optimizer step
        (EMA teachers, pruning controllers).
      before_batch: optional callback ``(trainer) -> None`` before every training forward,
        with ``params.batch_idx_train`` already counting this batch (schedules).
    """

    def __init__(
        self,
        params: AttributeDict,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        compute_loss: ComputeLoss,
        train_dl: Iterable,
        valid_dl: Optional[Iterable] = None,
        device: torch.device = torch.device("cpu"),
        rank: int = 0,
        world_size: int = 1,
        after_step: Optional[Callable[["Trainer"], None]] = None,
        before_batch: Optional[Callable[["Trainer"], None]] = None,
    ):
        defaults = dict(
            num_epochs=1, start_epoch=1, start_batch=0, seed=42, accum_grad=1, use_fp16=False,
            use_bf16=False, log_interval=50, valid_interval=3000, save_every_n=4000,
            keep_last_k=30, average_period=200, max_bad_batches=20, tensorboard=True,
            grad_scale_check_interval=100, min_grad_scale=1.0e-5, find_unused_parameters=False,
            inf_check=False, scan_oom=True, max_saved_batches=3, auto_resume=True, overwrite=False,
            compile=False, stop_time_hours=0.0, stop_time_clock="wall",
        )
        for k, v in defaults.items():
            params.setdefault(k, v)
        params.exp_dir = Path(params.exp_dir)
        check_training_options(params)
        params.setdefault("batch_idx_train", 0)
        params.setdefault("best_train_loss", float("inf"))
        params.setdefault("best_valid_loss", float("inf"))
        params.setdefault("best_train_epoch", -1)
        params.setdefault("best_valid_epoch", -1)
        params.setdefault("train_time", 0.0)  # seconds of --stop-time-clock spent training, over resumes
        self.params = params
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.compute_loss = compute_loss
        self.train_dl = train_dl
        self.valid_dl = valid_dl
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.after_step = after_step
        self.before_batch = before_batch

        if rank == 0:
            lock_exp_dir(params.exp_dir)  # (setup_run took it already in a training script)
            remove_stale_temp_files(params.exp_dir)
        model.to(device)
        self.model_avg = copy.deepcopy(model).to(torch.float64) if rank == 0 else None
        # fp16 needs loss scaling; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=bool(params.use_fp16), init_scale=1.0)
        self.model = model
        self.inf_check = InfCheck(model) if params.inf_check else None
        self.num_saved_batches = 0
        self._resume_state: Optional[Dict[str, Any]] = None
        self._load_resume_checkpoint()
        if params.compile:
            # In place (nn.Module.compile): parameters, state_dict keys and hooks stay those of
            # the module itself, so checkpoints and the averaged model are as without it.
            # Zipformer's ScheduledFloats are Python floats the graph specialises on: every
            # breakpoint a schedule crosses recompiles (22 in zipformer-ssl-base), and past
            # dynamo's limit (8) the forward silently runs eagerly.
            import torch._dynamo.config as dynamo_config

            limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"  # (torch < 2.6)
            setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), 64))
            model.compile()
        if world_size > 1:
            self.model = DDP(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=params.find_unused_parameters,
            )
        self.tb_writer = None
        if rank == 0 and params.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb_writer = SummaryWriter(log_dir=str(params.exp_dir / "tensorboard"))
        # (restored on resume: the --max-bad-batches count goes on across a restart)
        self.consecutive_bad = params.pop("consecutive_bad", 0)
        self.num_bad_batches = params.pop("num_bad_batches", 0)
        self._saved_bad_model = False

    # ------------------------------------------------------------------ resume
    @property
    def sampler(self):
        return getattr(self.train_dl, "sampler", None)

    def _resume_filename(self) -> Optional[Path]:
        """The checkpoint to resume from: ``--start-batch``/``--start-epoch`` when given, else
        (``--auto-resume``) the newest one in ``exp_dir``; None for a fresh start. Sets
        ``start_batch``/``start_epoch`` to what is resumed."""
        p = self.params
        if p.start_batch > 0:
            return p.exp_dir / f"checkpoint-{p.start_batch}.pt"
        if p.start_epoch > 1:
            filename = p.exp_dir / f"epoch-{p.start_epoch - 1}.pt"
            newest = None if filename.is_file() else newest_checkpoint(p.exp_dir)
            if newest is not None:
                raise FileNotFoundError(
                    f"--start-epoch {p.start_epoch}: {filename} does not exist (a run stopped "
                    f"while writing it leaves none). The newest checkpoint in {p.exp_dir} is "
                    f"{newest.name}: resume from it with "
                    + (f"--start-batch {newest.stem.split('-')[1]}" if newest.name.startswith("checkpoint-")
                       else f"--start-epoch {int(newest.stem.split('-')[1]) + 1}")
                    + ", or give no --start-* to resume from the newest automatically."
                )
            return filename
        newest = newest_checkpoint(p.exp_dir)
        if newest is None:
            return None
        if p.overwrite:
            if self.rank == 0:
                old = find_epoch_checkpoints(p.exp_dir) + [Path(f) for f in find_checkpoints(p.exp_dir)]
                old += [p.exp_dir / f for f in ("best-train-loss.pt", "best-valid-loss.pt") if (p.exp_dir / f).is_file()]
                logging.warning(f"--overwrite true: deleting {len(old)} checkpoints of an earlier run in {p.exp_dir}")
                for f in old:
                    f.unlink()
            return None
        if not p.auto_resume:
            raise FileExistsError(
                f"{p.exp_dir} has checkpoints of an earlier run (newest {newest.name}). Resume with "
                f"--auto-resume true (or --start-epoch / --start-batch), start afresh with "
                f"--overwrite true (deletes them), or use another --exp-dir."
            )
        n = int(newest.stem.split("-")[1])
        if newest.name.startswith("checkpoint-"):
            p.start_batch = n
        else:
            p.start_epoch = n + 1
        logging.info(f"--auto-resume: continuing from {newest} (the newest checkpoint)")
        return newest

    def _load_resume_checkpoint(self) -> None:
        p = self.params
        filename = self._resume_filename()
        if filename is None:
            return
        ckpt = load_checkpoint(
            filename, self.model, model_avg=self.model_avg, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler,
        )
        hidden = ckpt.get("training_state") or {}
        if "per_rank" in hidden:  # load_checkpoint put back rank 0's; this rank wants its own
            set_training_state(self.model, hidden["per_rank"][self.rank % len(hidden["per_rank"])])
        saved = ckpt["params"]
        if self.rank == 0:
            log_changed_options(saved, p)
        for k in ("batch_idx_train", "best_train_loss", "best_valid_loss", "best_train_epoch",
                  "best_valid_epoch", "consecutive_bad", "num_bad_batches", "train_time"):
            if k in saved:
                p[k] = saved[k]
        if p.start_batch > 0:
            # Mid-epoch: continue the saved epoch from the batch after the checkpoint.
            p.start_epoch = saved["cur_epoch"]
            self._resume_state = {
                "batch_idx_in_epoch": saved["batch_idx_in_epoch"],
                "sampler": ckpt.get("sampler"),
                "rng": ckpt["rng"],
            }
        logging.info(
            f"Resumed from {filename}: epoch {p.start_epoch}, batch_idx_train {p.batch_idx_train}"
        )
        if p.start_epoch > p.num_epochs:
            logging.info(f"Training is complete: {filename} ends epoch {p.num_epochs}; raise --num-epochs to go on")

    def _epoch_batches(self, epoch: int):
        """Iterator over the epoch's batches, fast-forwarded when resuming mid-epoch."""
        fix_random_seed(self.params.seed + epoch - 1)
        sampler = self.sampler
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch - 1)
        resume, self._resume_state = self._resume_state, None
        if resume is None:
            return iter(self.train_dl), 0
        skip = resume["batch_idx_in_epoch"]
        if resume["sampler"] is not None and hasattr(sampler, "load_state_dict"):
            # lhotse samplers fast-forward over metadata only, without loading audio.
            sampler.load_state_dict(copy.deepcopy(resume["sampler"]))
            it = iter(self.train_dl)
        else:
            it = iter(self.train_dl)
            for _ in range(skip):
                next(it)
        rng = resume["rng"]
        if "per_rank" in rng:
            if len(rng["per_rank"]) != self.world_size:
                logging.warning(
                    f"Checkpoint has RNG states of {len(rng['per_rank'])} ranks, this run has "
                    f"{self.world_size}: resuming with different random draws"
                )
            rng = rng["per_rank"][self.rank % len(rng["per_rank"])]
        set_rng_state(rng)
        return it, skip

    # ------------------------------------------------------------------ time budget
    def _clock(self) -> float:
        return time.process_time() if self.params.stop_time_clock == "cpu" else time.time()

    def _out_of_time(self) -> bool:
        """Whether ``--stop-time-hours`` is spent; under DDP rank 0's clock decides for all."""
        p = self.params
        if p.stop_time_hours <= 0:
            return False
        now = self._clock()
        p.train_time += now - self._clock_mark
        self._clock_mark = now
        done = torch.tensor(float(p.train_time >= p.stop_time_hours * 3600.0), device=self.device)
        if self.world_size > 1:
            dist.broadcast(done, src=0)
        return bool(done.item())

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        p = self.params
        self._clock_mark = self._clock()
        self.stopped_by_time = False
        try:
            if self._out_of_time():
                logging.info(f"Training is complete: --stop-time-hours {p.stop_time_hours} was spent "
                             f"({p.train_time / 3600:.3f} h of {p.stop_time_clock} time); raise it to go on")
                return
            if p.scan_oom and p.start_epoch == 1 and p.start_batch == 0:
                scan_pessimistic_batches_for_oom(
                    self.model, self.train_dl, self.compute_loss, self.optimizer, self.device,
                    p.exp_dir, lambda: autocast_context(self.device, p.use_fp16, p.use_bf16),
                )
            for epoch in range(p.start_epoch, p.num_epochs + 1):
                if self.scheduler is not None and hasattr(self.scheduler, "step_epoch"):
                    self.scheduler.step_epoch(epoch - 1)
                p.cur_epoch = epoch
                if self.tb_writer is not None:
                    self.tb_writer.add_scalar("train/epoch", epoch, p.batch_idx_train)
                train_loss = self.train_one_epoch(epoch)
                valid_loss = self.validate() if self.valid_dl is not None else None
                if self.stopped_by_time:
                    break  # a part epoch: its model is the checkpoint-<batch>.pt just written
                self._save_epoch(epoch, train_loss, valid_loss)
        finally:
            if self.tb_writer is not None:
                self.tb_writer.close()
            if self.rank == 0:
                unlock_exp_dir(p.exp_dir)
        logging.info("Done training")

    def train_one_epoch(self, epoch: int) -> float:
        """One epoch; returns the epoch's training loss per frame (reduced over ranks)."""
        p = self.params
        self.model.train()
        batches, batch_idx = self._epoch_batches(epoch)
        tot = MetricsTracker()
        interval = MetricsTracker()
        t_last_log = time.time()
        for batch in batches:
            batch_idx += 1
            if batch is None:
                continue  # every cut of this batch was unreadable; the dataset logged each one
            p.batch_idx_train += 1
            p.batch_idx_in_epoch = batch_idx
            is_step = p.batch_idx_train % p.accum_grad == 0
            if self.before_batch is not None:
                self.before_batch(self)
            info = self._forward_backward(batch, is_step)
            if info is not None:
                tot = tot + info
                interval = interval + info
            if is_step:
                self._optimizer_step()
            if self.rank == 0 and p.batch_idx_train % p.average_period == 0:
                update_averaged_model(p.batch_idx_train, p.average_period, self.model, self.model_avg)
            if is_step and p.batch_idx_train % p.save_every_n == 0:
                self._save_batch_checkpoint()
            if batch_idx % p.log_interval == 0:
                self._log_train(epoch, batch_idx, interval, time.time() - t_last_log)
                interval = MetricsTracker()
                t_last_log = time.time()
            if p.batch_idx_train % p.valid_interval == 0 and self.valid_dl is not None:
                self.validate()
                self.model.train()
            if is_step and self._out_of_time():
                logging.info(f"--stop-time-hours {p.stop_time_hours} spent ({p.stop_time_clock} clock) at batch "
                             f"{p.batch_idx_train}, epoch {epoch}: stopping")
                self.stopped_by_time = True
                if p.batch_idx_train % p.save_every_n != 0:  # (else written just above)
                    self._save_batch_checkpoint()
                break
        if p.batch_idx_train % p.accum_grad != 0:
            self._optimizer_step()  # do not carry half-accumulated gradients into the next epoch
        tot.reduce(self.device)
        loss = tot["loss"] / max(tot["frames"], 1)
        logging.info(f"Epoch {epoch} {'stopped' if self.stopped_by_time else 'done'}: {tot}")
        if self.tb_writer is not None:
            tot.write_summary(self.tb_writer, "train/epoch_", p.batch_idx_train)
        return loss

    def _forward_backward(self, batch, is_step: bool) -> Optional[MetricsTracker]:
        """Forward and backward of one batch; None when the loss was not finite (skipped)."""
        p = self.params
        # DDP: only all-reduce gradients on the batch that ends an accumulation window.
        sync = self.model.no_sync() if (isinstance(self.model, DDP) and not is_step) else contextlib.nullcontext()
        try:
            with sync:
                with autocast_context(self.device, p.use_fp16, p.use_bf16):
                    loss, info = self.compute_loss(self.model, batch, True)
                finite = torch.isfinite(loss.detach()).to(torch.float32)
                if self.world_size > 1:
                    # Every rank must skip together or DDP's collectives would hang.
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                if finite.item() == 0:
                    if not torch.isfinite(loss.detach()):
                        self._save_bad_batch(batch)
                    self._count_bad_batch(f"non-finite loss {loss.item()}")
                    return None
                self.scaler.scale(loss).backward()
        except Exception:
            try:
                self._save_bad_batch(batch, force=True)
            except Exception as e:  # never hide the original error behind a failed save
                logging.error(f"Could not save the batch that failed: {e}")
            raise
        return info

    def _save_bad_batch(self, batch, force: bool = False) -> None:
        """Keep a copy of a batch that broke training (the first few of a run, or on a crash)."""
        if not force and self.num_saved_batches >= self.params.max_saved_batches:
            return
        self.num_saved_batches += 1
        save_batch(batch, self.params.exp_dir / f"bad-batch-{self.params.batch_idx_train}-{self.rank}.pt")

    def _optimizer_step(self) -> None:
        p = self.params
        params = [q for q in self.model.parameters() if q.grad is not None]
        if not params:
            pass  # every batch of this accumulation window was skipped: nothing to apply
        elif self.scaler.is_enabled():
            scale_before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skips the step itself if grads are inf/nan
            self.scaler.update()
            if self.scaler.get_scale() < scale_before:
                self._count_bad_batch(f"inf/nan gradients, grad scale {scale_before} -> {self.scaler.get_scale()}")
            else:
                self.consecutive_bad = 0
            self._check_grad_scale()
        elif _grads_finite(params):
            self.optimizer.step()
            self.consecutive_bad = 0
        else:
            self._count_bad_batch("non-finite gradients; optimizer step skipped")
        self.optimizer.zero_grad(set_to_none=True)
        _step_scheduler_batch(self.scheduler, p.batch_idx_train)
        if self.after_step is not None:
            self.after_step(self)

    def _count_bad_batch(self, why: str) -> None:
        self.consecutive_bad += 1
        self.num_bad_batches += 1
        logging.warning(
            f"batch {self.params.batch_idx_train}: {why} (skipped; {self.consecutive_bad} in a row, "
            f"{self.num_bad_batches} in all)"
        )
        self.optimizer.zero_grad(set_to_none=True)
        if self.consecutive_bad >= self.params.max_bad_batches:
            path = self.save_bad_model()
            raise TrainingError(
                f"{self.consecutive_bad} consecutive batches with non-finite loss or gradients; "
                f"stopping. The model is saved in {path}. Try a lower --base-lr, --use-bf16 "
                f"instead of --use-fp16, or check the data of the last batches."
            )

    def _check_grad_scale(self) -> None:
        """Recover a collapsing fp16 grad scale; stop with a saved model if it keeps collapsing."""
        p = self.params
        if p.batch_idx_train % p.grad_scale_check_interval != 0:
            return
        scale = self.scaler.get_scale()
        # A scale stuck low after transient overflows costs precision: push it back up.
        if scale < 8.0 or (scale < 32.0 and p.batch_idx_train % (4 * p.grad_scale_check_interval) == 0):
            self.scaler.update(scale * 2.0)
        if scale < 0.01 and not self._saved_bad_model:
            self.save_bad_model(suffix="-first-warning")
            self._saved_bad_model = True
            logging.warning(f"Grad scale is small: {scale}")
        if scale < p.min_grad_scale:
            path = self.save_bad_model()
            raise TrainingError(
                f"fp16 grad scale collapsed to {scale} (< {p.min_grad_scale}); the model is saved "
                f"in {path}. Training diverges in fp16: try --use-bf16, a lower --base-lr, or "
                f"fp32."
            )

    # ------------------------------------------------------------------ validation / logging
    @torch.no_grad()
    def validate(self) -> float:
        p = self.params
        self.model.eval()
        tot = MetricsTracker()
        num_batches = num_empty = 0
        for batch in self.valid_dl:
            num_batches += 1
            if batch is None:
                num_empty += 1
                continue
            with autocast_context(self.device, p.use_fp16, p.use_bf16):
                loss, info = self.compute_loss(self.model, batch, False)
            tot = tot + info
        tot.reduce(self.device)
        if tot["frames"] <= 0:
            # A loss of 0 from nothing would become the "best" and be saved as best-valid-loss.pt.
            raise TrainingError(
                f"Validation read nothing: {num_batches} batches, {num_empty} of them with every "
                "cut unreadable (see the warnings above). Check the validation manifest "
                "(--valid-split) and that its audio/feature files exist."
            )
        loss = tot["loss"] / tot["frames"]
        if loss < p.best_valid_loss:
            p.best_valid_loss = loss
            p.best_valid_epoch = p.get("cur_epoch", 0)
        logging.info(f"Validation at batch {p.batch_idx_train}: {tot}; best valid loss {p.best_valid_loss:.4g}")
        if self.tb_writer is not None:
            tot.write_summary(self.tb_writer, "train/valid_", p.batch_idx_train)
        return loss

    def _log_train(self, epoch: int, batch_idx: int, info: MetricsTracker, elapsed: float) -> None:
        p = self.params
        lr = self._current_lr()
        msg = f"Epoch {epoch}, batch {batch_idx}, global {p.batch_idx_train}: {info}, lr {lr:.3g}"
        if info["seconds"] > 0 and elapsed > 0:
            # per rank; multiply by world size for the job's throughput
            msg += f", {info['seconds'] / elapsed:.1f} audio s/s"
        if self.scaler.is_enabled():
            msg += f", grad scale {self.scaler.get_scale():.3g}"
        logging.info(msg)
        if self.tb_writer is not None:
            self.tb_writer.add_scalar("train/learning_rate", lr, p.batch_idx_train)
            info.write_summary(self.tb_writer, "train/current_", p.batch_idx_train)
            if self.scaler.is_enabled():
                self.tb_writer.add_scalar("train/grad_scale", self.scaler.get_scale(), p.batch_idx_train)

    def _current_lr(self) -> float:
        if self.scheduler is not None and hasattr(self.scheduler, "get_last_lr"):
            return float(self.scheduler.get_last_lr()[0])
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> Dict[str, Any]:
        """What a checkpoint holds. Collective under DDP: every rank must call it."""
        rng, hidden = get_rng_state(), get_training_state(self.model)
        if self.world_size > 1:
            # Each rank draws its own masks and dropout, and its Whiten modules see their own
            # data: resume needs every rank's RNGs and hidden module state.
            states = [None] * self.world_size
            dist.all_gather_object(states, (rng, hidden))
            rng = {"per_rank": [s[0] for s in states]}
            hidden = {"per_rank": [s[1] for s in states]}
        params = AttributeDict(self.params, consecutive_bad=self.consecutive_bad,
                               num_bad_batches=self.num_bad_batches)
        return dict(
            model=self.model, model_avg=self.model_avg, params=params,
            optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler,
            scaler=self.scaler, rank=self.rank, rng=rng, training_state=hidden,
        )

    def _save_batch_checkpoint(self) -> None:
        p = self.params
        save_checkpoint_with_global_batch_idx(p.exp_dir, p.batch_idx_train, **self._state())
        remove_checkpoints(p.exp_dir, topk=p.keep_last_k, rank=self.rank)

    def _save_epoch(self, epoch: int, train_loss: float, valid_loss: Optional[float]) -> None:
        p = self.params
        p.batch_idx_in_epoch = 0
        if train_loss < p.best_train_loss:
            p.best_train_loss, p.best_train_epoch = train_loss, epoch
        filename = p.exp_dir / f"epoch-{epoch}.pt"
        save_checkpoint(filename, **self._state())
        if self.rank != 0:
            return
        if p.best_train_epoch == epoch:
            copy_checkpoint(filename, p.exp_dir / "best-train-loss.pt")
        if valid_loss is not None and p.best_valid_epoch == epoch and math.isfinite(valid_loss):
            copy_checkpoint(filename, p.exp_dir / "best-valid-loss.pt")

    def save_bad_model(self, suffix: str = "") -> Path:
        """Every rank that hits the problem saves its own copy (no collective call here)."""
        path = self.params.exp_dir / f"bad-model{suffix}-{self.rank}.pt"
        save_checkpoint(
            path, model=self.model, model_avg=self.model_avg, params=self.params,
            optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler,
            scaler=self.scaler, rank=0,
        )
        return path


def setup_run(params: AttributeDict, rank: int, world_size: int, name: str) -> torch.device:
    """Start of every training script: join the process group, log to ``exp_dir/log/log-<name>``
    and the console, log the environment and params; returns this rank's device."""
    check_training_options(params)
    setup_dist(rank, world_size, params.get("master_port", 12354))
    params.exp_dir = Path(params.exp_dir)
    if rank == 0:
        lock_exp_dir(params.exp_dir)  # before the log file: a second run writes nothing here
    setup_logger(params.exp_dir / "log" / f"log-{name}", rank=rank, world_size=world_size)
    log_env_info()
    logging.info(f"Params: {dict(params)}")
    fix_random_seed(params.get("seed", 42))
    device = get_device(rank)
    if device.type == "cpu":
        logging.info(f"CPU memory settings: {', '.join(setup_cpu_memory()) or 'none'} (docs/training.md)")
    return device


def add_optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    """ScaledAdam + Eden options (``--base-lr`` comes from ``add_training_arguments``)."""
    g = parser.add_argument_group("optimizer")
    g.add_argument("--lr-batches", type=float, default=7500, help="Eden: batches at which the lr has decayed by ~0.84")
    g.add_argument("--lr-epochs", type=float, default=3.5, help="Eden: epochs at which the lr has decayed by ~0.84")
    g.add_argument("--warmup-batches", type=float, default=500.0, help="Eden: linear warm-up length")
    g.add_argument("--clipping-scale", type=float, default=2.0, help="ScaledAdam: clip at this multiple of the median grad norm")
    g.add_argument("--ref-duration", type=float, default=600.0, help="Batch counts for schedules are scaled by max_duration*world_size/ref_duration")


def make_optimizer(model: nn.Module, params: AttributeDict):
    """ScaledAdam over named parameters (trainable only) and its Eden schedule."""
    from icefall.optim import Eden, ScaledAdam

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = ScaledAdam(named, lr=params.base_lr, clipping_scale=params.get("clipping_scale", 2.0))
    scheduler = Eden(
        optimizer,
        lr_batches=params.get("lr_batches", 7500),
        lr_epochs=params.get("lr_epochs", 3.5),
        warmup_batches=params.get("warmup_batches", 500.0),
    )
    return optimizer, scheduler


def set_schedule_count(trainer: "Trainer") -> None:
    """``before_batch`` callback: advance Zipformer's ScheduledFloats by data seen, not batches."""
    from icefall.nn.scaling import set_batch_count

    p = trainer.params
    scale = p.get("max_duration", p.get("ref_duration", 600.0)) * trainer.world_size / p.get("ref_duration", 600.0)
    set_batch_count(trainer.model, p.batch_idx_train * scale)
