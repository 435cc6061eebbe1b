"""The denoiser report shows its slow steps (issue 37): a bar each for the x0 MSE per t, the DDIM-50 samples and
the DiffAug examples, status lines for reading images; with progress=False it says nothing."""
import argparse

import pytest

import diffaug_fast
from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.eval.denoiser_report import report_command, write_report

STEPS = ("report: x0 MSE per t (fp32)", "report: DDIM-50 sampling of 4 images", "report: DiffAug examples")


@pytest.fixture(scope="module")
def denoiser():
    return diffaug_fast.pretrained("fmnist")


@pytest.fixture(scope="module")
def test_images():
    return load_fashion_mnist("test", limit=8)[0]


def test_report_shows_each_slow_step(denoiser, test_images, tmp_path, capfd):
    write_report(denoiser, tmp_path / "report", test_images, limit=8, samples=4)
    err = capfd.readouterr().err
    for step in STEPS:
        assert step in err, step


def test_report_without_progress_is_silent(denoiser, test_images, tmp_path, capfd):
    write_report(denoiser, tmp_path / "report", test_images, limit=8, samples=4, progress=False)
    assert capfd.readouterr() == ("", "")
    assert (tmp_path / "report" / "report.md").exists()


def test_report_command_says_what_it_reads(tmp_path, capfd):
    options = argparse.Namespace(model="fmnist", data="fmnist", limit=8, samples=4, seed=0, device="cpu")
    report_command(options, tmp_path / "report")
    err = capfd.readouterr().err
    assert "report: reading up to 8 test images of fmnist" in err
    assert "report: reading up to 2000 training images of fmnist for the mean image" in err
    for step in STEPS:
        assert step in err, step
