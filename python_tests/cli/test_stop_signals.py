"""Every command stops on SIGTERM (what `kill`, SLURM and Kubernetes send) the way it stops on Ctrl-C: one line
saying so, exit status 128 + the signal, no traceback; the training and evaluation tests check what each keeps."""
import os
import signal

import pytest

from diffaug_fast.errors import Stopped, TrainingStopped, sigterm_stops, stop_status


def test_sigterm_raises_stopped_inside_the_block_only():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append(True))
    try:
        with pytest.raises(Stopped) as caught, sigterm_stops():
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM did not stop the block")
        assert caught.value.signum == signal.SIGTERM and isinstance(caught.value, KeyboardInterrupt)
        os.kill(os.getpid(), signal.SIGTERM)  # after the block: the handler from before is back
        assert seen == [True]
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("exc, says, status", [
    (KeyboardInterrupt(), "interrupted", 130),  # Python's own Ctrl-C
    (Stopped(signal.SIGINT), "interrupted", 130),
    (Stopped(signal.SIGTERM), "stopped by SIGTERM", 143),
    (TrainingStopped(signal.SIGTERM), "stopped by SIGTERM", 143),
])
def test_stop_status_names_the_signal_as_a_shell_would(exc, says, status):
    assert stop_status(exc) == (says, status)
