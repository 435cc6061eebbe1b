"""A stopped run always says how to go on, and the way it names works: a run that a bad image stopped before its
first checkpoint is not resumable, so `--resume` says to rerun without it, and that plain rerun trains (issue 37)."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

CLI = [sys.executable, "-m", "diffaug_fast.cli"]


def _image_folder(root, truncated: str | None = None):
    """Two classes of ten 20x20 JPEGs; ``truncated`` (e.g. "b/3.jpg") cut short, as a failed copy leaves one."""
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            Image.fromarray(np.full((20, 20), 25 * i, np.uint8)).save(root / cls / f"{i}.jpg")
    if truncated:
        victim = root / truncated
        victim.write_bytes(victim.read_bytes()[:40])


def _train(*extra, cwd):
    args = ["train", "--data", "images", "--val-size", "0", "--batch-size", "18", "--epochs", "1", "--diffaug", "off",
            "--de-timesteps", "", "--out", "run", *extra]
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.slow  # three CLI runs, one of them a (tiny) training run with its evaluation
def test_a_run_stopped_before_its_first_checkpoint_is_started_again_without_resume(tmp_path):
    _image_folder(tmp_path / "images", truncated="b/3.jpg")
    first = _train(cwd=tmp_path)
    assert first.returncode == 2 and "cannot read image" in first.stderr, first.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "config.json").exists()

    resumed = _train("--resume", cwd=tmp_path)
    assert resumed.returncode == 2, resumed.stderr
    assert ("argument --resume: run holds no checkpoint (the run stopped before its first one); run the same "
            "command without --resume to start it again") in resumed.stderr
    assert "Traceback" not in resumed.stderr and len(resumed.stderr.strip().splitlines()) == 1

    _image_folder(tmp_path / "images")  # the bad image replaced
    again = _train(cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already holds a run" not in again.stderr
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "metrics.json").exists()
