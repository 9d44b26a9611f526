"""Small utilities every recipe uses: params dicts, option parsing, logging, metrics, masks."""
from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import numpy as np
import torch
import torch.distributed as dist


class AttributeDict(dict):
    """A dict whose keys are also attributes: ``params.exp_dir`` == ``params["exp_dir"]``."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"No such attribute '{key}'") from None

    def __setattr__(self, key, value):
        self[key] = value

    def __delattr__(self, key):
        try:
            del self[key]
        except KeyError:
            raise AttributeError(f"No such attribute '{key}'") from None


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def str2bool(value: Union[str, bool]) -> bool:
    """Parse a command-line boolean. ``type=bool`` would turn the string "false" into True."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"Expected a boolean (true/false/1/0), got {value!r}")


class StoreGiven(argparse.Action):
    """``store``, and records the option's dest in ``namespace.options_given`` when it is on the
    command line, so that a value the user asked for can be told from a (recipe) default."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.options_given = sorted(set(getattr(namespace, "options_given", None) or ()) | {self.dest})


def fix_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def get_rng_state() -> Dict:
    """Snapshot of every RNG that training touches, for exact resume; plain values and
    tensors only (numpy's key as an int64 tensor), so checkpoints load with weights_only."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, cached = state["numpy"]
    key = np.asarray(key.numpy() if isinstance(key, torch.Tensor) else key, dtype=np.uint32)
    np.random.set_state((kind, key, pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def setup_logger(
    log_filename: Union[str, Path, None],
    log_level: str = "info",
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Log to ``<log_filename>-<date>[-<rank>]`` and, on rank 0 only, to the console.

    Every rank keeps its own file so that a failure on rank 3 is not lost; only rank 0 talks
    to the terminal so that N ranks do not print N copies of every line.
    """
    fmt = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"
    if world_size > 1:
        fmt = f"%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] ({rank}/{world_size}) %(message)s"
    level = getattr(logging, log_level.upper())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    formatter = logging.Formatter(fmt)
    if log_filename is not None:
        now = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        suffix = f"-{rank}" if world_size > 1 else ""
        path = Path(f"{log_filename}-{now}{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path)
        fh.setFormatter(formatter)
        root.addHandler(fh)
    if rank == 0:
        ch = logging.StreamHandler()
        ch.setFormatter(formatter)
        root.addHandler(ch)


class MetricsTracker(collections.Counter):
    """Sums of per-batch statistics; ``frames`` is the normaliser.

    A loss stored as a sum over frames is reported per frame; ``frames`` and other counts
    (``utterances``, ``seconds``) are reported as totals; a key of :attr:`RATIO_KEYS` is divided
    by the sum of the key it names.
    """

    #: keys that are counts, reported as they are rather than divided by frames
    COUNT_KEYS = ("frames", "utterances", "seconds")
    #: keys divided by another key's sum instead: WavLM's mixed utterances per utterance, and
    #: the mean energy ratio (dB) of the mixed ones
    RATIO_KEYS = {"mixed": "utterances", "mix_db": "mixed"}

    def __add__(self, other: "MetricsTracker") -> "MetricsTracker":
        out = MetricsTracker()
        for k, v in self.items():
            out[k] = v
        for k, v in other.items():
            out[k] = out[k] + v
        return out

    def __mul__(self, alpha: float) -> "MetricsTracker":
        out = MetricsTracker()
        for k, v in self.items():
            out[k] = v * alpha
        return out

    def norm_items(self):
        """[(key, value)] with sums divided by ``frames`` (counts left as they are)."""
        def norm(k: str, v: float) -> float:
            if k in self.COUNT_KEYS:
                return float(v)
            by = self[self.RATIO_KEYS.get(k, "frames")]
            return float(v) / (by if by > 0 else 1)

        return [(k, norm(k, v)) for k, v in self.items()]

    def __str__(self) -> str:
        return ", ".join(
            f"{k}={v:.4g}" if k not in self.COUNT_KEYS else f"{k}={v:.0f}"
            for k, v in self.norm_items()
        )

    def reduce(self, device: torch.device) -> None:
        """Sum every value across DDP ranks (in place). A no-op without a process group."""
        if get_world_size() == 1:
            return
        keys = sorted(self.keys())
        s = torch.tensor([float(self[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(s, op=dist.ReduceOp.SUM)
        for k, v in zip(keys, s.cpu().tolist()):
            self[k] = v

    def write_summary(self, tb_writer, prefix: str, batch_idx: int) -> None:
        for k, v in self.norm_items():
            tb_writer.add_scalar(prefix + k, v, batch_idx)


def make_pad_mask(lengths: torch.Tensor, max_len: int = 0) -> torch.Tensor:
    """Padding mask from lengths.

    Args:
      lengths: (B,) int tensor.
      max_len: width of the mask; at least ``lengths.max()``.
    Returns:
      (B, T) bool tensor, True at padded positions (t >= lengths[b]).
    """
    assert lengths.ndim == 1, lengths.shape
    if lengths.numel() > 0 and not torch.compiler.is_compiling():  # (a compiled graph trusts max_len)
        max_len = max(max_len, int(lengths.max()))
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)


def read_utf8(path: Union[str, Path]) -> str:
    """The text of ``path``. A file that is not UTF-8 raises a ValueError naming the file, the
    line and the byte (Python's UnicodeDecodeError names neither the file nor the line)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            f"convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


@contextlib.contextmanager
def naming_file_on_decode_error(path: Union[str, Path]) -> Iterator[None]:
    """For text read in a stream (csv, gzip): a UnicodeDecodeError inside becomes a ValueError
    that names ``path``."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason}, byte 0x{e.object[e.start]:02x})") from None


def atomic_write_path(path: Union[str, Path]) -> Path:
    """A temporary sibling of ``path`` to write to before ``os.replace`` (same filesystem).

    It keeps the suffixes, since lhotse's writers pick gzip by them.
    """
    path = Path(path)
    return path.with_name(f".tmp{os.getpid()}.{path.name}")


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def optional_int(x: Optional[str]) -> Optional[int]:
    return None if x in (None, "", "none", "None") else int(x)
