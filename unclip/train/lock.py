"""One live training per run directory.

A second `unclip train` started on a directory that a live run is writing would resume from the same checkpoint,
cut the metrics log back to it (dropping the live run's lines) and then write checkpoints and log lines interleaved
with the live run's. So the trainer holds an advisory lock on RUN_DIR/.lock while it works, and a second process
is refused with the holder's pid. The lock is flock(2): the operating system drops it when its holder exits or is
killed, so a crashed run never leaves a stale lock behind. Within one process the lock is re-entrant (a test or
a notebook may build two trainers on one directory in turn). On platforms without fcntl (Windows) runs are not
guarded.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"
_held: dict[Path, list[int]] = {}  # resolved run directory -> [file descriptor, holders in this process]


class RunDirBusyError(ValueError):
    """Another live process is training in this run directory (a ValueError, as every refused argument is, so the
    CLI reports it in one line naming the directory)."""


def acquire(run_dir: str | os.PathLike) -> None:
    """Take RUN_DIR's lock, or raise RunDirBusyError naming the process that holds it."""
    key = Path(run_dir).resolve()
    if key in _held:
        _held[key][1] += 1
        return
    if fcntl is None:
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process that did not say"
        os.close(fd)
        raise RunDirBusyError(f"{key} is being trained by another process ({holder}); let it finish, stop it, "
                              "or use another --run-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    _held[key] = [fd, 1]


def release(run_dir: str | os.PathLike) -> None:
    """Give back one hold on RUN_DIR's lock; the last one unlocks it."""
    key = Path(run_dir).resolve()
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] == 0:
        fd = _held.pop(key)[0]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
