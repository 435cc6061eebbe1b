"""The package's error type for mistakes a user can fix (bad option, wrong file, mismatched model).

The command line prints such an error as one line and exits with status 2; anything else is a bug or an
environment failure: one summary line, exit status 1, and the traceback in a log file (``--debug`` shows it).
Argument checks in the Python API raise ``ValueError`` / ``FileNotFoundError`` as Python users expect; the
command line treats those as user errors too.
"""
from __future__ import annotations

import contextlib
import signal
import threading


class DiffAugError(Exception):
    """A user error: the message says which option or file is wrong and what was expected."""


USER_ERRORS = (DiffAugError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


class Stopped(KeyboardInterrupt):
    """A command stopped on a signal: Ctrl-C's SIGINT, or the SIGTERM schedulers (SLURM, Kubernetes) and `kill`
    send; ``signum`` names it. A KeyboardInterrupt, so code that handles Ctrl-C handles SIGTERM the same way."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TrainingStopped(Stopped):
    """Training stopped on a signal after saving the step it arrived in."""


def stop_status(exc: KeyboardInterrupt) -> tuple[str, int]:
    """How a stopped command says it stopped, and its exit status (128 + the signal, as a shell reports it)."""
    signum = getattr(exc, "signum", signal.SIGINT)
    return ("interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"), 128 + signum


@contextlib.contextmanager
def sigterm_stops():
    """Inside the block SIGTERM raises Stopped where Python's default would end the process at once: finally
    blocks run and the command says what it kept (main thread only; the previous handler comes back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        # None: a handler installed outside Python, which Python cannot put back; the default is the nearest
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
