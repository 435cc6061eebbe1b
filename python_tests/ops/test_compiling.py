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


@pytest.mark.parametrize("sender", ["a thread that takes it", "the process, every thread blocking it"])
def test_a_stop_signal_is_acknowledged_at_once_while_the_main_thread_waits_in_c(sender):
    """Issue 37: Ctrl-C during the first compile waited ~95 s in silence. The main thread waits in C here (for a
    child process, as for the compiler), where no Python handler can run; the notice still comes at once."""
    got, delivered = [], []
    previous = signal.signal(signal.SIGINT, lambda *_: delivered.append(True))
    ready, go = threading.Event(), threading.Event()

    def taker():  # started before the block: SIGINT is not blocked in this thread
        ready.set()
        go.wait(5)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    try:
        if sender == "a thread that takes it":
            threading.Thread(target=taker, daemon=True).start()
            ready.wait(5)
            send = go.set
        else:
            send = lambda: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
        with stop_signals_deferred(notice=lambda s, n: got.append((s, n, time.perf_counter())) or "noticed"):
            start = time.perf_counter()
            threading.Timer(0.1, send).start()
            subprocess.run(["sleep", "3"])
            end = time.perf_counter()
            assert delivered == []  # deferred
        assert [(s, n) for s, n, _ in got] == [(signal.SIGINT, 1)]
        assert got[0][2] < end - 1.5, "the notice waited for the main thread"
        assert got[0][2] > start
        for _ in range(100):
            if delivered:
                break
            time.sleep(0.01)
        assert delivered == [True]  # and the handler in place before the block still gets it, once
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_ctrl_c_abandons_the_block_at_once(tmp_path):
    """The first Ctrl-C is acknowledged, the second ends the process with status 130 without waiting for the block
    (the child it waits for, like the compiler, blocks both signals and finishes on its own)."""
    import sys

    script = ("import subprocess\n"
              "from diffaug_fast.ops.compiling import stop_signals_deferred\n"
              "with stop_signals_deferred(abandon=lambda: 'abandoned: nothing kept'):\n"
              "    print('inside', flush=True)\n"
              "    subprocess.run(['sleep', '20'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
              "print('after the block', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    assert proc.stdout.readline().strip() == "inside"
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130 and time.perf_counter() - start < 10, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Ctrl-C again to abandon" in lines[0] and lines[1] == "abandoned: nothing kept", err
    assert "after the block" not in out
