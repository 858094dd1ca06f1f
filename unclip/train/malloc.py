"""glibc's allocator set to keep the memory a training step frees, for the next step to reuse.

By default glibc returns freed heap to the kernel once more than 128 KiB is free at its top, and serves blocks over a
threshold that grows with use (from 128 KiB) by fresh mmap calls. A training step allocates and frees the same
activations every time, so the kernel hands the same pages back, zeroed, tens of thousands of times a step (minor
page faults, seen as system time). Raising the mmap threshold to 32 MiB and the trim threshold to 2 GiB, with a
256 MiB top pad, keeps them in the process: measured by `benchmarks/train_speed.py`. The price is that the process's
resident size stays at its peak, which for training it reaches anyway.

The same settings can be given before Python starts (MALLOC_MMAP_THRESHOLD_ etc., see mallopt(3)); `mallopt` sets
them from inside, for the allocations that follow. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
TRAINING = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: (2 << 30) - 1, M_TOP_PAD: 256 << 20}


def keep_freed_memory(settings: dict[int, int] | None = None) -> bool:
    """Apply `settings` (mallopt parameter -> value; default TRAINING) to glibc's malloc. True when mallopt accepted
    every one (glibc 2.36 accepts any value; tests/test_malloc.py measures the effect instead), False where there is
    no mallopt (macOS, Windows) or it returned 0 (musl's does nothing)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (TRAINING if settings is None else settings).items())
