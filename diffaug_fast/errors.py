"""The package's error type for mistakes a user can fix (bad option, wrong file, mismatched model).

The command line prints such an error as one line and exits with status 2; anything else is a bug or an
environment failure: one summary line, exit status 1, and the traceback in a log file (``--debug`` shows it).
Argument checks in the Python API raise ``ValueError`` / ``FileNotFoundError`` as Python users expect; the
command line treats those as user errors too.
"""
from __future__ import annotations

import signal


class DiffAugError(Exception):
    """A user error: the message says which option or file is wrong and what was expected."""


USER_ERRORS = (DiffAugError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal (Ctrl-C's SIGINT, a scheduler's SIGTERM) after saving the step it arrived in;
    ``signum`` names the signal. A KeyboardInterrupt, so code that handles Ctrl-C handles it too."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
