"""Tests never run in the checkout (issue 37): the README's first command leaves a finished run in runs/train, and a
CLI case with the default --out then met "runs/train already holds a run" instead of its own message."""
from pathlib import Path

from conftest import REPO


def test_each_test_runs_in_its_own_empty_directory_outside_the_checkout():
    here = Path.cwd().resolve()
    assert REPO not in (here, *here.parents)
    assert list(here.iterdir()) == []
