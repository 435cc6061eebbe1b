"""Faults: a training run killed with SIGKILL at a random step resumes to the same weights as an uninterrupted
run; a corrupted or half-replaced checkpoint falls back to the previous one; a full disk is reported, keeping
the last good checkpoint. All with real subprocesses."""
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from diffaug_fast.runs.checkpoint import MAGIC, load_verified, previous_path, save_atomic
from diffaug_fast.config import train_config
from diffaug_fast.train.classifier import train_classifier

CLI = [sys.executable, "-m", "diffaug_fast.cli"]
SETTINGS = dict(train_limit=640, batch_size=32, epochs=2, checkpoint_every=3, log_every=1, warmup_steps=2,
                eval_limit=20, de_timesteps=[0, 300], compile="off", ema_decay=0.9)  # 40 steps with DiffAug
TRAIN_SCRIPT = (
    "import sys, json; from diffaug_fast.config import train_config; from diffaug_fast.train.classifier import train_classifier; "
    "train_classifier(train_config('quick', **json.loads(sys.argv[1])), sys.argv[2], progress=False, "
    "evaluate_at_end=False)")


def _same_weights(a, b):
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    train_classifier(train_config("quick", **SETTINGS), run, progress=False, evaluate_at_end=False)
    return load_verified(run / "checkpoint.pt", fallback=False)


def _logged_step(run):
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else 0


@pytest.mark.slow  # two 40-step training runs, one in a subprocess
def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(tmp_path, uninterrupted):
    kill_after = random.Random(os.getpid()).randint(5, 30)  # a different step on each run of the test
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, json.dumps(SETTINGS), str(tmp_path)])
    deadline = time.time() + 600
    while _logged_step(tmp_path) < kill_after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    stopped = load_verified(tmp_path / "checkpoint.pt")["step"]
    assert 0 < stopped < 40
    train_classifier(train_config("quick", **SETTINGS), tmp_path, progress=False, evaluate_at_end=False)
    resumed = load_verified(tmp_path / "checkpoint.pt", fallback=False)
    assert resumed["step"] == 40
    _same_weights(resumed, uninterrupted)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # the log has each step once, whatever the kill left behind


@pytest.mark.slow  # two training runs
def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted, capfd):
    config = train_config("quick", **SETTINGS)
    train_classifier(config, tmp_path, progress=False, stop_after=7, evaluate_at_end=False)  # saves at 3, 6, 7
    ckpt = tmp_path / "checkpoint.pt"
    assert load_verified(ckpt)["step"] == 7 and load_verified(previous_path(ckpt))["step"] == 6
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the payload
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_verified(ckpt, fallback=False)
    assert load_verified(ckpt)["step"] == 6
    assert "using the previous checkpoint checkpoint.pt.prev" in capfd.readouterr().err
    train_classifier(config, tmp_path, progress=False, evaluate_at_end=False)  # resumes from step 6
    _same_weights(load_verified(ckpt, fallback=False), uninterrupted)


def test_kill_between_the_two_renames_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_atomic({"step": 1}, path)
    save_atomic({"step": 2}, path)
    os.replace(path, previous_path(path))  # as if killed after moving the current file away
    assert load_verified(path)["step"] == 2
    path.write_bytes(MAGIC + b"0" * 64 + b"\n" + b"truncated")  # a foreign or truncated file
    assert load_verified(path)["step"] == 2
    with pytest.raises(ValueError, match="corrupted"):
        load_verified(path, fallback=False)


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


@pytest.mark.slow  # `diffaug-fast train` and python subprocesses
def test_disk_full_is_reported_in_one_line_and_the_good_checkpoint_kept(tmp_path):
    """A 200 kB file-size limit stands in for a full disk: the ~1 MB checkpoint cannot be written."""
    out = tmp_path / "run"
    args = ["train", "--diffaug", "off", "--train-limit", "256", "--batch-size", "32", "--de-timesteps", "",
            "--compile", "off", "--out", str(out)]
    res = subprocess.run(CLI + args, capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size)
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert "could not write checkpoint" in err[-1] and "Traceback" not in res.stderr
    assert not (out / "checkpoint.pt.tmp").exists() and not (out / "checkpoint.pt").exists()
    # with a good checkpoint in place, a failing save leaves it untouched
    save_atomic({"step": 5}, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    big = {"w": torch.zeros(100_000)}
    code = ("import sys, torch, signal, resource; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
            "from diffaug_fast.runs.checkpoint import save_atomic; save_atomic({'w': torch.zeros(100_000)}, sys.argv[1])")
    res = subprocess.run([sys.executable, "-c", code, str(out / "checkpoint.pt")], capture_output=True, text=True)
    assert res.returncode != 0 and "the previous checkpoint is kept" in res.stderr
    assert (out / "checkpoint.pt").read_bytes() == before and len(big["w"]) == 100_000
