"""One run per experiment dir: a lock file naming the owner, and the clean-up of what an
interrupted run left behind.

``<exp_dir>/run.lock`` holds ``{"pid": ..., "host": ...}`` of the run that owns the dir. A second
run refuses with an error that names the owner. A lock whose process is gone (same host, pid not
running) is stale: the next run takes it over and says so in the log. Only rank 0 of a DDP job
locks. Temporary files of an interrupted atomic save (``.tmp<pid>.<name>``, see
``icefall.utils.atomic_write_path``) are removed once the lock is held.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

PathLike = Union[str, Path]
LOCK_NAME = "run.lock"

_held: Dict[Path, Dict[str, object]] = {}


class ExpDirLockedError(RuntimeError):
    """Another live run owns the experiment dir; the message names its pid and host."""


def _me() -> Dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _read_owner(path: Path) -> Optional[Dict[str, object]]:
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) and "pid" in owner and "host" in owner else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _is_stale(owner: Optional[Dict[str, object]]) -> bool:
    if owner is None:  # empty or garbled: its writer died between create and write
        return True
    return owner["host"] == socket.gethostname() and not _alive(int(owner["pid"]))


def lock_exp_dir(exp_dir: PathLike) -> Path:
    """Make this process the one run of ``exp_dir``; returns the lock file.

    Holding it already is fine (a script's ``setup_run`` and its ``Trainer`` both ask). Raises
    ExpDirLockedError naming the owner when another live run holds it.
    """
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    path = exp_dir.resolve() / LOCK_NAME
    me = _me()
    for attempt in range(20):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner == me:
                _held[path] = me
                return path
            if owner is None and attempt < 10:
                time.sleep(0.05)  # maybe just created and not written yet
                continue
            if not _is_stale(owner):
                raise ExpDirLockedError(
                    f"{exp_dir} is in use by another run: pid {owner['pid']} on host "
                    f"{owner['host']} (lock file {path}). Wait for it to finish or use another "
                    f"--exp-dir; if that run is dead, delete {path}."
                ) from None
            what = f"pid {owner['pid']} on {owner['host']}" if owner else "an unreadable owner"
            logging.warning(f"{path}: taking over the stale lock of {what}, which is no longer running")
            try:
                path.unlink()
            except FileNotFoundError:
                pass  # another run took it over first; try again
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        if _read_owner(path) == me:  # two runs taking over one stale lock: one wins
            _held[path] = me
            return path
    raise ExpDirLockedError(f"{exp_dir}: could not take the lock {path}")


def unlock_exp_dir(exp_dir: PathLike) -> None:
    """Give up the lock of ``exp_dir`` if this process holds it."""
    path = Path(exp_dir).resolve() / LOCK_NAME
    if _held.pop(path, None) is not None and _read_owner(path) == _me():
        path.unlink()


@atexit.register
def _unlock_all() -> None:
    for path in list(_held):
        unlock_exp_dir(path.parent)


def remove_stale_temp_files(exp_dir: PathLike) -> List[Path]:
    """Delete ``.tmp<pid>.*`` files an interrupted atomic save left in ``exp_dir`` (call it
    with the lock held, so that no live run is writing them); returns what was removed."""
    removed = []
    for f in sorted(Path(exp_dir).glob(".tmp[0-9]*.*")):
        if f.is_file():
            f.unlink()
            removed.append(f)
            logging.info(f"Removed {f}, left by an interrupted save")
    return removed
