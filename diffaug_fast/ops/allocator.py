"""Keep freed host memory for reuse instead of returning it to the kernel after every large tensor.

glibc serves an allocation above its mmap threshold (it adapts, up to 32 MB) with fresh pages from the kernel and
unmaps them when the tensor is freed, so every step of a CPU job pays page faults for its large activations again:
the default training run spent 182 s of its 1060 s of CPU time in the kernel (47 million minor page faults) before
this. Raising the thresholds makes glibc keep and reuse that memory, as a caching allocator does on a GPU.
Nothing is done where glibc is absent or the user set MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ themselves.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap threshold to 1 GiB and its trim threshold to 2 GiB; True when both were set."""
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError, TypeError):
        return False
