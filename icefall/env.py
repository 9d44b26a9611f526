"""The process environment: what ran (versions, git state and host, logged at the start of every
script) and the memory settings of CPU training (:func:`setup_cpu_memory`)."""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

_REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "unknown")
    except Exception:
        return "not installed"


def get_env_info() -> Dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "num_gpus": torch.cuda.device_count(),
        "lhotse": _version("lhotse"),
        "k2": _version("k2"),
        "kaldifeat": _version("kaldifeat"),
        "git_sha1": _git("rev-parse", "--short", "HEAD"),
        "git_date": _git("log", "-1", "--format=%cd"),
        "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_dirty": _git("status", "--porcelain") not in ("", "unknown"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "icefall_path": str(_REPO),
        "cmd": " ".join(sys.argv),
        "cwd": os.getcwd(),
    }


def log_env_info() -> Dict[str, Any]:
    info = get_env_info()
    logging.info("Environment: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    return info


# glibc <malloc.h> mallopt() parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc gives each allocation above its mmap threshold (32 MiB at most) its own
    mapping and unmaps it on free, so a training step's large activations (the wav2vec2 CNN's
    are 65-200 MB for 20 s of audio) are faulted in page by page on every step: ~600k page
    faults per forward+backward of the CNN front end here.  Serving them from the heap and never
    trimming it removes the faults after the first steps and makes CPU training of the base
    encoders ~25% faster (docs/RESULTS.md), for a higher resident peak, as with a GPU caching
    allocator.  It applies to this process and to the processes it forks afterwards.

    Returns True if set; False without glibc or with ``ICEFALL_KEEP_FREED_MEMORY=0``.
    """
    if os.environ.get("ICEFALL_KEEP_FREED_MEMORY", "1") == "0" or platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # mmap_max 0: no per-allocation mappings; trim threshold -1: never shrink the heap
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))


def drop_onednn_primitive_cache() -> bool:
    """Turn off oneDNN's primitive cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``), unless the
    variable is set already.

    oneDNN (mkldnn, behind torch's CPU convolutions) keeps up to 1024 compiled primitives, one
    per input shape.  Speech batches change shape every step (bucketed lengths), so the cache
    mostly misses and only grows: the mini recipe's pretraining loop went from 0.6 to 2.6 GB of
    RSS in 120 steps with it, and stayed at 0.8 GB without it, at the same speed (recreating a
    primitive costs little next to the convolution itself).  oneDNN reads the variable once, at
    its first primitive, so this must run before the first convolution of the process.

    Returns True if this call set it.
    """
    if "ONEDNN_PRIMITIVE_CACHE_CAPACITY" in os.environ or "DNNL_PRIMITIVE_CACHE_CAPACITY" in os.environ:
        return False
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "0"
    return True


def setup_cpu_memory() -> List[str]:
    """Memory settings for training on CPU: :func:`keep_freed_memory` (speed) and
    :func:`drop_onednn_primitive_cache` (resident size).  Returns the names of those applied."""
    return [f.__name__ for f in (keep_freed_memory, drop_onednn_primitive_cache) if f()]
