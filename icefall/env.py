"""What ran: versions, git state and host, logged at the start of every script."""
from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

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
