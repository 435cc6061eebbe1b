"""`diffaug-fast sample` draws in batches (--batch-size) and keeps every finished batch: a draw stopped by SIGTERM
(or Ctrl-C) continues where it stopped when the same command runs again, and equals the uninterrupted draw."""
import signal
import subprocess
import sys
import time

import numpy as np

from diffaug_fast.eval.guidance import SampleBatches

CLI = [sys.executable, "-m", "diffaug_fast.cli"]


def test_batches_of_other_settings_are_dropped(tmp_path):
    folder = tmp_path / "samples.partial"
    kept = SampleBatches(folder, {"seed": 0, "num": 9})
    kept.put(3, np.full((3, 1, 2, 2), 7, dtype=np.uint8))
    again = SampleBatches(folder, {"seed": 0, "num": 9})
    assert again.count() == 1 and (again.get(3) == 7).all() and again.get(0) is None
    assert SampleBatches(folder, {"seed": 1, "num": 9}).count() == 0  # another seed: another draw
    SampleBatches(folder, {"sizes": (1, 2)}).put(0, np.zeros((1,), dtype=np.uint8))
    assert SampleBatches(folder, {"sizes": (1, 2)}).count() == 1  # settings compare as saved (JSON lists)


def test_sigterm_keeps_the_finished_batches_and_the_rerun_continues(tmp_path):
    out, folder = tmp_path / "s", tmp_path / "s" / "samples.partial"
    args = CLI + ["sample", "--num", "30", "--batch-size", "3", "--steps", "ddim25", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list(folder.glob("from-*.npy"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    kept = sorted(folder.glob("from-*.npy"))
    assert proc.returncode == 143, err
    assert f"stopped by SIGTERM: {len(kept)} of 10 batches kept in {folder}; run the same command again" in err
    assert "Traceback" not in err and 2 <= len(kept) < 10 and not (out / "samples.npz").exists()
    # mark one kept batch: the rerun must take it as it is rather than draw it again
    marked = int(kept[0].stem.split("-")[1])
    np.save(kept[0], np.zeros_like(np.load(kept[0])))
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{3 * len(kept)} kept from a stopped run" in again.stdout
    images = np.load(out / "samples.npz")["images"]
    assert images.shape == (30, 1, 28, 28) and (images[marked:marked + 3] == 0).all() and not folder.exists()
    # everything else is the uninterrupted draw, here made in one batch (the network's float rounding may differ
    # between batch sizes by a unit of the last place: at most 1 grey level after rounding)
    whole = subprocess.run(CLI + ["sample", "--num", "30", "--batch-size", "30", "--steps", "ddim25", "--out",
                                  str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    reference = np.load(tmp_path / "whole" / "samples.npz")["images"]
    rest = np.r_[0:marked, marked + 3:30]
    assert np.abs(images[rest].astype(int) - reference[rest]).max() <= 1 and reference.std() > 10
