"""torch.compile made safe to interrupt: Ctrl-C and SIGTERM deferred while a compilation runs, and the inductor
cache checked for shared objects an interrupted compiler left behind.

Why: inductor links each compiled kernel with the C++ compiler straight into its cache
(``<cache>/<xx>/<key>.so``). A Ctrl-C in a terminal reaches the whole process group, the compiler included; killed
mid-link it leaves an empty or truncated ``.so`` under the key, and every later run that compiles the same graph
loads that file and fails ("file too short") until it is deleted by hand.

* :func:`stop_signals_deferred` blocks SIGINT and SIGTERM in the calling thread for the block. Processes started
  inside (the C++ compiler, inductor's compile workers) inherit the blocked mask, so a terminal's Ctrl-C or a
  scheduler's SIGTERM to the whole job no longer kills them. A signal this process receives meanwhile is
  acknowledged at once by a watcher thread, and raised again, to the handler in place before, when the block ends;
  a second Ctrl-C abandons the compilation (the process ends; the compiler's processes finish their files).
* :func:`repair_inductor_cache` deletes ``.so`` files of the cache that cannot be whole (empty, no ELF header, or
  shorter than their section headers' end) and were last written over a minute ago (not a link in progress in
  another process); inductor then compiles them again.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import select
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
ABANDON_STATUS = 128 + signal.SIGINT  # what a shell reports for a Ctrl-C


def _default_notice(signum: int, count: int) -> str:
    if count == 1:
        return (f"{signal.Signals(signum).name} received: stopping once torch.compile finishes (stopping the compiler "
                "mid-link would leave broken kernels in its cache); Ctrl-C again to abandon it now")
    return "Ctrl-C again: abandoned the compilation; nothing of it is kept"


class _Watcher:
    """One daemon thread, started by the first deferred block, that sees a stop signal the moment it arrives, even
    while the main thread sits in C (waiting for the compiler), where Python signal handlers cannot run.

    A signal reaches it two ways: another thread that does not block it runs the C handler, which writes the signal
    number to the wake-up pipe (``signal.set_wakeup_fd``, set only inside a block); or, when every thread blocks it,
    it stays pending and ``sigtimedwait`` takes it (the watcher was started inside a block, so it blocks both too)."""

    POLL_S = 0.2

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)
        self.lock = threading.Lock()
        self.block = None  # the _Block being watched
        threading.Thread(target=self._watch, name="diffaug-fast-stop-watcher", daemon=True).start()

    def _watch(self):
        while True:
            select.select([self.read_fd], [], [], self.POLL_S)
            with self.lock:
                self.take()
                if self.block is not None:
                    got = signal.sigtimedwait(STOP_SIGNALS, 0)
                    if got is not None:
                        self.block.note(got.si_signo)

    def take(self) -> None:
        """Read what the wake-up pipe holds; note the stop signals of the block being watched (caller holds lock)."""
        try:
            data = os.read(self.read_fd, 512)
        except BlockingIOError:
            return
        if self.block is not None:
            for signum in data:
                if signum in STOP_SIGNALS:
                    self.block.note(signum)


class _Block:
    def __init__(self, notice, abandon):
        self.received: list[int] = []
        self.notice, self.abandon = notice, abandon

    def note(self, signum: int) -> None:
        """A stop signal inside the block: say so at once; a second Ctrl-C ends the process now (status 130)."""
        self.received.append(signum)
        again = signum == signal.SIGINT and self.received.count(signal.SIGINT) >= 2
        if again or len(self.received) == 1:  # a callback may print its line itself (e.g. above a progress bar)
            line = self.abandon() if again and self.abandon else self.notice(signum, 2 if again else 1)
            if line:
                print(line, file=sys.stderr, flush=True)
        if again:  # the compiler's processes block both signals: they finish their files, then exit
            os._exit(ABANDON_STATUS)


_watcher: _Watcher | None = None
_depth = 0


@contextlib.contextmanager
def stop_signals_deferred(notice=None, abandon=None):
    """Ctrl-C and SIGTERM wait until the block ends (main thread on POSIX; elsewhere the block runs as it is).

    The first stop signal is acknowledged at once on stderr (the line ``notice(signum, 1)`` returns, or one saying
    the run stops after the compile); a second Ctrl-C prints ``abandon()`` (or the default line) and ends the process
    with status 130 without waiting. A callback returning None has printed its line itself. Nested blocks are part
    of the outermost one."""
    global _watcher, _depth
    if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask")
            or _depth):
        _depth += threading.current_thread() is threading.main_thread()
        try:
            yield
        finally:
            _depth -= threading.current_thread() is threading.main_thread()
        return
    block = _Block(notice or _default_notice, abandon)
    handlers = {sig: signal.signal(sig, lambda *_: None) for sig in STOP_SIGNALS}  # the watcher notes them
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    if _watcher is None:
        _watcher = _Watcher()  # started with both signals blocked, as sigtimedwait needs
    previous_fd = signal.set_wakeup_fd(_watcher.write_fd, warn_on_full_buffer=False)
    with _watcher.lock:
        _watcher.block = block
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one still pending arrives now: the pipe gets it
        with _watcher.lock:
            _watcher.take()
            _watcher.block = None
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(block.received):
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
