"""Checkpoints: atomic save/load of the full training state, keep-last-k, and model averaging.

File names follow icefall: ``epoch-N.pt`` at the end of epoch N, ``checkpoint-B.pt`` after global
batch B, ``best-train-loss.pt`` / ``best-valid-loss.pt``. A checkpoint is a dict with keys
``model``, ``model_avg``, ``optimizer``, ``scheduler``, ``sampler``, ``grad_scaler``, ``rng``,
``training_state`` (hidden module state, see :func:`get_training_state`) and ``params`` (the
run's options as plain values, including ``batch_idx_train``).
"""
from __future__ import annotations

import glob
import logging
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn as nn

from icefall.utils import atomic_write_path, get_rng_state

PathLike = Union[str, Path]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP (or the module itself)."""
    return model.module if hasattr(model, "module") and isinstance(
        model, nn.parallel.DistributedDataParallel
    ) else model


def get_training_state(model: nn.Module) -> Dict[str, Dict[str, Any]]:
    """``{module name: state}`` of every module with training state outside its state dict
    (modules that define ``training_state()``, e.g. Whiten's probability, which changes
    inside backward). Kept out of the state dict so that exports and key lists do not change."""
    return {
        name: m.training_state()
        for name, m in unwrap_model(model).named_modules()
        if callable(getattr(m, "training_state", None))
    }


def set_training_state(model: nn.Module, state: Dict[str, Dict[str, Any]]) -> None:
    """Put back what :func:`get_training_state` returned; names must match the model."""
    modules = dict(unwrap_model(model).named_modules())
    unknown = sorted(set(state) - set(modules))
    if unknown:
        raise KeyError(f"training state of modules the model does not have: {unknown[:5]}")
    for name, s in state.items():
        modules[name].load_training_state(s)


def atomic_torch_save(obj: Any, filename: PathLike) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``filename``.

    A crash (or a full disk) mid-write leaves the previous ``filename`` untouched.
    """
    filename = Path(filename)
    filename.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_write_path(filename)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    finally:
        if tmp.exists():
            tmp.unlink()


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint's pickle names a global that loading it would call (possibly to run code);
    the message names the file and the global."""


_GLOBAL_IN_ERROR = re.compile(r"GLOBAL ([\w.]+)")


def _legacy_globals() -> List[Any]:
    """Harmless globals that checkpoints written before our files were plain data hold: numpy
    arrays (RNG state) and paths (params). Rebuilding them runs no code of the file's choice."""
    import pathlib

    import numpy as np

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array rebuilder
    return [
        np.ndarray, np.dtype, type(np.dtype("uint32")), pathlib.PosixPath, pathlib.PurePosixPath,
        (reconstruct, "numpy.core.multiarray._reconstruct"),  # numpy 1 pickles
        (reconstruct, "numpy._core.multiarray._reconstruct"),  # numpy 2 pickles
    ]


def load_file(
    filename: PathLike, map_location: Union[str, torch.device] = "cpu", mmap: bool = False
) -> Dict[str, Any]:
    """Load a file of weights (any of our checkpoints, ``pretrained.pt``, averaged models)
    without running code: ``torch.load(weights_only=True)``, which rebuilds only tensors and
    plain Python values. Every load of weights in the project goes through here (fairseq
    pickles through the restricted unpickler of ``icefall.ssl.fairseq_import``).

    Raises FileNotFoundError, UnsafeCheckpointError (the pickle asks for a global such as
    ``posix.system``; the file is refused and nothing of it runs) or RuntimeError (truncated /
    not a torch file), each naming ``filename``. ``mmap``: map tensors instead of reading them
    (cheap when only ``params`` is wanted).
    """
    if not Path(filename).is_file():
        raise FileNotFoundError(f"Checkpoint not found: {filename}")
    try:
        with torch.serialization.safe_globals(_legacy_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        m = _GLOBAL_IN_ERROR.search(str(e))
        what = f"global {m.group(1)}" if m else str(e).splitlines()[0]
        raise UnsafeCheckpointError(
            f"Refusing to load {filename}: its pickle asks for {what}, which a file of weights "
            "never needs and which could run code. Our checkpoints are plain tensors and "
            "values; a fairseq checkpoint is given as fairseq:<path>."
        ) from None
    except Exception as e:  # truncated / not a checkpoint
        raise RuntimeError(f"Cannot read checkpoint {filename}: {e}") from e


def to_plain(obj: Any) -> Any:
    """``obj`` as plain values that ``weights_only`` loading accepts: dict subclasses and
    Namespaces -> dict, paths -> str, numpy scalars/arrays -> Python numbers / tensors; other
    objects -> ``str``. Tensors, numbers, strings, None and containers of them stay."""
    import argparse

    import numpy as np

    if isinstance(obj, torch.Tensor) or obj is None:
        return obj
    for base in (bool, int, float, str, bytes):  # (subclasses such as enums: their base value)
        if isinstance(obj, base):
            return obj if type(obj) is base else base(obj.value if hasattr(obj, "value") else obj)
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        return {k if isinstance(k, (str, int)) else str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [to_plain(v) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (torch.dtype, torch.device)):
        return obj
    return str(obj)


def save_checkpoint(
    filename: PathLike,
    model: nn.Module,
    model_avg: Optional[nn.Module] = None,
    params: Optional[Dict[str, Any]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    sampler: Optional[Any] = None,
    scaler: Optional[Any] = None,
    rank: int = 0,
    rng: Optional[Any] = None,
    training_state: Optional[Any] = None,
) -> None:
    """Save the full training state atomically. Only rank 0 writes.

    ``rng``, ``training_state``: the RNG states and hidden module state to store (e.g. one per
    DDP rank); default this process's.
    """
    if rank != 0:
        return
    checkpoint = {
        "model": unwrap_model(model).state_dict(),
        # float64, as kept in memory, so that a resumed run averages exactly like an unbroken one
        "model_avg": model_avg.state_dict() if model_avg is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "sampler": sampler.state_dict() if sampler is not None and hasattr(sampler, "state_dict") else None,
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng if rng is not None else get_rng_state(),
        "training_state": training_state if training_state is not None else get_training_state(model),
        # plain values only, so that loading needs no pickled classes (see load_file)
        "params": to_plain(dict(params)) if params is not None else {},
    }
    atomic_torch_save(checkpoint, filename)
    logging.info(f"Saved checkpoint to {filename}")


def load_checkpoint(
    filename: PathLike,
    model: nn.Module,
    model_avg: Optional[nn.Module] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[Any] = None,
    strict: bool = True,
) -> Dict[str, Any]:
    """Restore what is given from ``filename``; returns the whole checkpoint dict.

    The model's hidden training state is restored too (of rank 0 when it was saved per rank;
    the trainer puts back each rank's own). The caller restores the sampler and RNG states
    itself (they must be applied at the right moment of the epoch loop, see
    ``icefall.trainer``).
    """
    logging.info(f"Loading checkpoint from {filename}")
    ckpt = load_file(filename)
    unwrap_model(model).load_state_dict(ckpt["model"], strict=strict)
    training_state = ckpt.get("training_state")
    if training_state:
        if "per_rank" in training_state:
            training_state = training_state["per_rank"][0]
        set_training_state(model, training_state)
    if model_avg is not None and ckpt.get("model_avg") is not None:
        model_avg.load_state_dict(ckpt["model_avg"], strict=strict)
        model_avg.to(torch.float64)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("grad_scaler", scaler)):
        if obj is not None and ckpt.get(name) is not None:
            obj.load_state_dict(ckpt[name])
    return ckpt


def save_checkpoint_with_global_batch_idx(
    out_dir: PathLike, global_batch_idx: int, **kwargs
) -> Path:
    """Save ``<out_dir>/checkpoint-<global_batch_idx>.pt``; kwargs as in ``save_checkpoint``."""
    filename = Path(out_dir) / f"checkpoint-{global_batch_idx}.pt"
    save_checkpoint(filename, **kwargs)
    return filename


def find_checkpoints(out_dir: PathLike, iteration: int = 0) -> List[str]:
    """``checkpoint-B.pt`` files in ``out_dir``, newest (largest B) first.

    ``iteration > 0``: only those with B >= iteration; ``iteration < 0``: only B <= -iteration.
    """
    pattern = re.compile(r"checkpoint-(\d+)\.pt$")
    found = []
    for f in glob.glob(f"{out_dir}/checkpoint-[0-9]*.pt"):
        m = pattern.search(f)
        if m:
            found.append((int(m.group(1)), f))
    found.sort(reverse=True)
    if iteration >= 0:
        return [f for b, f in found if b >= iteration]
    return [f for b, f in found if b <= -iteration]


def find_epoch_checkpoints(out_dir: PathLike) -> List[Path]:
    """``epoch-N.pt`` files in ``out_dir``, newest (largest N) first."""
    found = []
    for f in Path(out_dir).glob("epoch-*.pt"):
        m = re.fullmatch(r"epoch-(\d+)\.pt", f.name)
        if m:
            found.append((int(m.group(1)), f))
    return [f for _, f in sorted(found, reverse=True)]


def newest_checkpoint(out_dir: PathLike) -> Optional[Path]:
    """The checkpoint latest in training among ``epoch-N.pt`` and ``checkpoint-B.pt`` (every
    file there is complete: saves are atomic), or None. A ``checkpoint-B.pt`` counts as later
    than the newest epoch file only when B is beyond that epoch's last batch."""
    epochs = find_epoch_checkpoints(out_dir)
    batches = find_checkpoints(out_dir)
    if not batches:
        return epochs[0] if epochs else None
    newest_batch = Path(batches[0])
    if not epochs:
        return newest_batch
    b = int(re.search(r"checkpoint-(\d+)\.pt$", newest_batch.name).group(1))
    try:
        epoch_end = load_file(epochs[0], mmap=True)["params"]["batch_idx_train"]
    except (RuntimeError, KeyError, TypeError) as e:
        logging.warning(f"{epochs[0]}: cannot read its batch count ({e}); taking {newest_batch}")
        return newest_batch
    return newest_batch if b > epoch_end else epochs[0]


def remove_checkpoints(out_dir: PathLike, topk: int, rank: int = 0) -> None:
    """Keep the ``topk`` newest ``checkpoint-B.pt`` files, delete the rest (rank 0 only)."""
    if rank != 0 or topk < 0:
        return
    for f in find_checkpoints(out_dir)[topk:]:
        os.remove(f)


def copy_checkpoint(src: PathLike, dst: PathLike) -> None:
    """Atomic copy, so ``best-valid-loss.pt`` is never half written."""
    tmp = atomic_write_path(dst)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _is_float(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t) or torch.is_complex(t)


def average_state_dicts(state_dicts: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of float tensors; non-float tensors (counters) are taken from the first."""
    n = len(state_dicts)
    assert n > 0
    avg = {}
    for k, v in state_dicts[0].items():
        if _is_float(v):
            acc = v.to(torch.float64).clone()
            for sd in state_dicts[1:]:
                acc += sd[k].to(torch.float64)
            avg[k] = (acc / n).to(v.dtype)
        else:
            avg[k] = v.clone()
    return avg


def average_checkpoints(filenames: List[PathLike], key: str = "model") -> Dict[str, torch.Tensor]:
    """Mean of ``ckpt[key]`` over the files."""
    return average_state_dicts([load_file(f)[key] for f in filenames])


@torch.no_grad()
def update_averaged_model(
    batch_idx_train: int, average_period: int, model_cur: nn.Module, model_avg: nn.Module
) -> None:
    """Running mean of snapshots taken every ``average_period`` batches.

    After batch ``n`` (a multiple of the period) ``model_avg`` is the mean of the snapshots at
    batches p, 2p, ..., n: avg <- avg * (1 - w) + cur * w with w = p / n.
    """
    weight_cur = average_period / batch_idx_train
    cur = unwrap_model(model_cur).state_dict()
    for k, v in model_avg.state_dict().items():
        if _is_float(v):
            v.mul_(1 - weight_cur).add_(cur[k].to(device=v.device, dtype=v.dtype), alpha=weight_cur)
        else:
            v.copy_(cur[k])


def average_checkpoints_with_averaged_model(
    filename_start: PathLike, filename_end: PathLike
) -> Dict[str, torch.Tensor]:
    """Mean of the model over the batches in (start, end], from two running averages.

    ``model_avg`` at batch n is the mean of n/p snapshots, so
    mean over (start, end] = (end * avg_end - start * avg_start) / (end - start).
    """
    start = load_file(filename_start)
    end = load_file(filename_end)
    b_start = start["params"]["batch_idx_train"]
    b_end = end["params"]["batch_idx_train"]
    if b_end <= b_start:
        raise ValueError(
            f"{filename_end} (batch {b_end}) must be later than {filename_start} (batch {b_start})"
        )
    w_end = b_end / (b_end - b_start)
    w_start = -b_start / (b_end - b_start)
    out = {}
    for k, v_end in end["model_avg"].items():
        if _is_float(v_end):
            v = v_end.to(torch.float64) * w_end + start["model_avg"][k].to(torch.float64) * w_start
            out[k] = v.to(v_end.dtype)
        else:
            out[k] = v_end.clone()
    return out


def averaged_state_dict_for_decoding(
    exp_dir: PathLike,
    epoch: int = 0,
    iteration: int = 0,
    avg: int = 1,
    use_averaged_model: bool = True,
) -> Dict[str, torch.Tensor]:
    """The model weights that ``decode.py --epoch/--iter --avg --use-averaged-model`` asks for.

    ``--iter B --avg k``: the k newest ``checkpoint-*.pt`` at or before B; ``--epoch E --avg k``:
    epochs E-k+1..E. With ``use_averaged_model`` the running averages of the two end points
    give the mean over every batch in between (needs one more checkpoint than ``avg``).
    """
    exp_dir = Path(exp_dir)
    if iteration > 0:
        files = find_checkpoints(exp_dir, iteration=-iteration)
        need = avg + 1 if use_averaged_model else avg
        if len(files) < need:
            raise FileNotFoundError(
                f"--iter {iteration} --avg {avg}: need {need} checkpoints <= {iteration} in "
                f"{exp_dir}, found {len(files)}"
            )
        files = files[:need]
        if use_averaged_model:
            return average_checkpoints_with_averaged_model(files[-1], files[0])
        return average_checkpoints(files)
    if epoch <= 0:
        raise ValueError("Give --epoch > 0 or --iter > 0")
    if use_averaged_model:
        start = epoch - avg
        end_file = exp_dir / f"epoch-{epoch}.pt"
        if start == 0:
            # Averaging from the very beginning: the running average of epoch E is the answer.
            return {k: v for k, v in load_file(end_file)["model_avg"].items()}
        if start < 0:
            raise ValueError(f"--epoch {epoch} --avg {avg}: need epoch > avg with averaged model")
        return average_checkpoints_with_averaged_model(exp_dir / f"epoch-{start}.pt", end_file)
    first = epoch - avg + 1
    if first < 1:
        raise ValueError(f"--epoch {epoch} --avg {avg}: not enough epochs")
    return average_checkpoints([exp_dir / f"epoch-{i}.pt" for i in range(first, epoch + 1)])
