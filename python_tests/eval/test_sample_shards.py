"""`sample` shared by several processes (torchrun, or RANK / WORLD_SIZE by hand): process r draws batches r, r + N,
...; the last to finish writes the draw, which equals one process's draw of the same batches."""
import os
import subprocess
import sys

import numpy as np
import pytest

from diffaug_fast.errors import DiffAugError
from diffaug_fast.eval.guidance import SampleBatches, sample_shard

CLI = [sys.executable, "-m", "diffaug_fast.cli"]
DRAW = ["sample", "--num", "10", "--batch-size", "3", "--steps", "ddim5", "--device", "cpu"]


def _start(out, rank=None, world=None):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if rank is not None:
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    return subprocess.Popen(CLI + DRAW + ["--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return stdout


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("alone")
    _finish(_start(out))
    return np.load(out / "samples.npz")["images"].astype(int)


def test_two_processes_draw_the_one_process_draw(tmp_path, one_process):
    lines = [_finish(p) for p in [_start(tmp_path, r, 2) for r in (0, 1)]]
    writers = [line for line in lines if "10 samples (" in line and "drawn by the other processes" in line]
    assert len(writers) == 1, lines  # exactly one writes
    others = [line for line in lines if line not in writers]
    assert len(others) == 1 and "of 2: 2 of 4 batches drawn" in others[0], lines
    shared = np.load(tmp_path / "samples.npz")["images"].astype(int)
    assert np.abs(shared - one_process).max() <= 1  # float rounding across thread counts only (0 seen)
    assert not (tmp_path / "samples.partial").exists()


def test_a_missing_process_leaves_its_batches_to_a_rerun(tmp_path, one_process):
    line = _finish(_start(tmp_path, 0, 2))  # process 1 of 2 never runs
    assert "process 0 of 2: 2 of 4 batches drawn" in line and "2 batches still being drawn" in line, line
    assert not (tmp_path / "samples.npz").exists()
    assert sorted(p.name for p in (tmp_path / "samples.partial").glob("from-*.npy")) == [
        "from-000000000.npy", "from-000000006.npy"]
    rerun = _finish(_start(tmp_path))  # alone: draws the two missing batches and writes the draw
    assert "6 kept from a stopped run" in rerun, rerun  # batches 0 and 6, 3 images each
    assert np.abs(np.load(tmp_path / "samples.npz")["images"].astype(int) - one_process).max() <= 1


def test_shard_from_the_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert sample_shard() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert sample_shard() == (1, 3)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(DiffAugError, match="RANK=3 and WORLD_SIZE=3 in the environment"):
        sample_shard()


def test_only_one_process_claims_the_writing(tmp_path):
    a, b = SampleBatches(tmp_path / "p", {"seed": 0}), SampleBatches(tmp_path / "p", {"seed": 0})
    assert [a.claim(), b.claim(), a.claim()] == [True, False, False]


def test_a_writer_that_fails_gives_the_writing_back(tmp_path, monkeypatch, one_process):
    from diffaug_fast.config import SampleOptions
    from diffaug_fast.eval import guidance

    o = SampleOptions(num=10, batch_size=3, steps="ddim5", device="cpu", out=str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert guidance.sample_command(o) is None  # its share only: batches 0 and 6
    monkeypatch.setenv("RANK", "1")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(guidance, "_write_draw", full_disk)
        with pytest.raises(OSError):
            guidance.sample_command(o)  # drew batches 3 and 9, claimed the writing, failed
    assert not (tmp_path / "samples.partial" / "writing").exists()
    assert guidance.sample_command(o) == tmp_path / "samples.npz"  # all batches kept: it only writes
    assert np.abs(np.load(tmp_path / "samples.npz")["images"].astype(int) - one_process).max() <= 1
