"""What the study scripts share: the names of the two rows / columns, and the one way a study's runs are trained
(`diffaug-fast train --diffaug off|on --seed S` under <runs>/diffaug-{off,on}-seedS, resumed where stopped)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "diffaug_fast.cli"]


def two_labels(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """``--labels "off,on"`` as two names, or the parser's one-line error."""
    labels = text.split(",")
    if len(labels) != 2:
        parser.error(f"--labels: expected two names separated by a comma, got {text!r}")
    return labels


def study_run(runs: str | Path, mode: str, seed: int) -> Path:
    return Path(runs) / f"diffaug-{mode}-seed{seed}"


def train_study_run(runs: str | Path, mode: str, seed: int, train_options: list[str]) -> Path:
    """The finished run for (mode, seed), trained or resumed with ``train_options`` if it is not finished."""
    run = study_run(runs, mode, seed)
    if not (run / "metrics.json").exists():
        cmd = CLI + ["train", "--diffaug", mode, "--seed", str(seed), "--out", str(run),
                     *(["--resume"] if (run / "checkpoint.pt").exists() else []), *train_options]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return run
