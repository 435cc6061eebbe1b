"""torch.compile made safe to interrupt: Ctrl-C and SIGTERM deferred while a compilation runs, and the inductor
cache checked for shared objects an interrupted compiler left behind.

Why: inductor links each compiled kernel with the C++ compiler straight into its cache
(``<cache>/<xx>/<key>.so``). A Ctrl-C in a terminal reaches the whole process group, the compiler included; killed
mid-link it leaves an empty or truncated ``.so`` under the key, and every later run that compiles the same graph
loads that file and fails ("file too short") until it is deleted by hand.

* :func:`stop_signals_deferred` blocks SIGINT and SIGTERM in the calling thread for the block. Processes started
  inside (the C++ compiler, inductor's compile workers) inherit the blocked mask, so a terminal's Ctrl-C or a
  scheduler's SIGTERM to the whole job no longer kills them. A signal this process receives meanwhile (through
  another of its threads) is noted and raised again, to the handler in place before, when the block ends.
* :func:`repair_inductor_cache` deletes ``.so`` files of the cache that cannot be whole (empty, no ELF header, or
  shorter than their section headers' end) and were last written over a minute ago (not a link in progress in
  another process); inductor then compiles them again.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import signal
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

STALE_SECONDS = 60.0  # a broken .so untouched this long is a leftover, not a link in progress
_repaired: set[str] = set()


# Ctrl-C's SIGINT reaches the terminal's process group, a scheduler's SIGTERM (scancel, a time limit) every process
# of the job: both would reach the compiler.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_deferred():
    """Ctrl-C and SIGTERM wait until the block ends (main thread on POSIX; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    pending = []
    handlers = {sig: signal.signal(sig, lambda signum, _frame: pending.append(signum)) for sig in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one blocked in this thread arrives now, noted
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)  # to the handler in place before the block


def inductor_cache_dir() -> Path:
    """The folder inductor caches compiled kernels in ($TORCHINDUCTOR_CACHE_DIR, else its default)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        return Path(cache_dir())
    except Exception:  # an older / newer torch: its documented default
        default = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
        return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default)


def broken_shared_object(path: str | Path) -> bool:
    """True for a Linux ``.so`` that cannot be a whole ELF file: empty, not ELF, or cut before its section headers
    (the linker writes those last). Other platforms' files are only checked for being empty."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    if size == 0:
        return True
    if not sys.platform.startswith("linux"):
        return False
    if len(head) < 52 or head[:4] != b"\x7fELF":
        return True
    little = head[5] == 1
    if head[4] == 2 and len(head) >= 64:  # ELF64: e_shoff at 0x28, e_shentsize / e_shnum at 0x3A
        shoff, = struct.unpack_from("<Q" if little else ">Q", head, 0x28)
        entsize, count = struct.unpack_from("<HH" if little else ">HH", head, 0x3A)
    else:  # ELF32: e_shoff at 0x20, e_shentsize / e_shnum at 0x2E
        shoff, = struct.unpack_from("<I" if little else ">I", head, 0x20)
        entsize, count = struct.unpack_from("<HH" if little else ">HH", head, 0x2E)
    return shoff + entsize * count > size


def repair_inductor_cache(cache: str | Path | None = None, *, stale_seconds: float = STALE_SECONDS) -> list[Path]:
    """Delete the broken ``.so`` files of the inductor cache (once per folder and process); returns them."""
    root = Path(cache) if cache is not None else inductor_cache_dir()
    key = str(root.resolve()) if root.exists() else str(root)
    if cache is None and key in _repaired:
        return []
    _repaired.add(key)
    removed = []
    if not root.is_dir():
        return removed
    now = time.time()
    for path in root.rglob("*.so"):
        try:
            old = now - path.stat().st_mtime > stale_seconds
        except OSError:
            continue
        if old and broken_shared_object(path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
