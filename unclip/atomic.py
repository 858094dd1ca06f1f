"""Replacing a file all at once: written beside it under a temporary name, renamed over it only when complete.

A crash or an error mid-write leaves the old file (or none) and no temporary file, never half of the new one, and
two processes writing the same path do not share a temporary file (its name carries the writer's pid). Torch-free,
so the world's manifests and the pipeline's outputs use it as the checkpoints do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call write(tmp) for a temporary path beside `path`, then rename tmp over `path`; remove tmp on any failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Path.write_text, atomically (replace_atomically)."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text))
