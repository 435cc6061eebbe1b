"""torch.compile made safe to interrupt (issue 16): broken kernels an interrupted compiler left in the inductor cache
are found and deleted, Ctrl-C waits for a compilation, and the "No CUDA runtime is found" note is filtered."""
import logging
import os
import signal
import subprocess
import threading
import time

import pytest

import diffaug_fast  # noqa: F401  (installs the log filter)
from diffaug_fast.ops import extension
from diffaug_fast.ops.compiling import broken_shared_object, repair_inductor_cache, stop_signals_deferred


def _real_shared_object():
    import diffaug_fast._C as ext

    return ext.__file__


def _age(path, seconds=600):
    old = time.time() - seconds
    os.utime(path, (old, old))


@pytest.mark.skipif(not extension.has_extension(), reason="needs the built extension (a real .so)")
def test_broken_shared_objects_are_told_from_whole_ones(tmp_path):
    whole = open(_real_shared_object(), "rb").read()
    assert not broken_shared_object(_real_shared_object())
    cases = {"empty.so": b"", "text.so": b"not an ELF file at all, but long enough" * 4,
             "cut.so": whole[:len(whole) // 2], "whole.so": whole}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert {name: broken_shared_object(tmp_path / name) for name in cases} == {
        "empty.so": True, "text.so": True, "cut.so": True, "whole.so": False}


@pytest.mark.skipif(not extension.has_extension(), reason="needs the built extension (a real .so)")
def test_repair_deletes_old_broken_kernels_only(tmp_path):
    whole = open(_real_shared_object(), "rb").read()
    (tmp_path / "ab").mkdir()
    old_empty, new_empty, good = tmp_path / "ab" / "k1.so", tmp_path / "ab" / "k2.so", tmp_path / "ab" / "k3.so"
    old_empty.write_bytes(b"")
    new_empty.write_bytes(b"")  # just created: maybe another process's link in progress, left alone
    good.write_bytes(whole)
    _age(old_empty)
    _age(good)
    assert repair_inductor_cache(tmp_path) == [old_empty]
    assert not old_empty.exists() and new_empty.exists() and good.exists()
    assert repair_inductor_cache(tmp_path / "missing") == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_is_delivered_once_when_the_block_ends(sig):
    seen = []
    previous = signal.signal(sig, lambda *_: seen.append(True))
    try:
        for send in (lambda: os.kill(os.getpid(), sig),  # to the process (any thread may take it)
                     lambda: signal.pthread_kill(threading.main_thread().ident, sig)):
            seen.clear()
            with stop_signals_deferred():
                send()
                time.sleep(0.05)
                assert seen == []  # deferred: nothing yet
            for _ in range(100):
                if seen:
                    break
                time.sleep(0.01)
            assert seen == [True]
    finally:
        signal.signal(sig, previous)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the signal mask from /proc")
def test_processes_started_in_the_block_do_not_take_ctrl_c_or_sigterm():
    """A terminal's Ctrl-C reaches the whole process group, a scheduler's SIGTERM every process of the job: the
    compiler must have both blocked."""
    def child_blocks(sig):
        status = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True).stdout
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)
        return bool(mask & (1 << (sig - 1)))

    with stop_signals_deferred():
        assert child_blocks(signal.SIGINT) and child_blocks(signal.SIGTERM)
    assert not child_blocks(signal.SIGINT) and not child_blocks(signal.SIGTERM)


def test_no_cuda_runtime_note_is_filtered_and_other_messages_pass():
    logger = logging.getLogger("torch.utils.cpp_extension")
    got = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
        logger.warning("something else from %s", "cpp_extension")
    finally:
        logger.removeHandler(handler)
    assert got == ["something else from cpp_extension"]
