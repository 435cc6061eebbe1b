"""FID / IS / KID below the sample sizes where they mean anything are warned about (issue 37): the thresholds
directly, and one small `fidelity` run whose printed lines and JSON carry the warnings next to the bootstrap
interval."""
import argparse
import json

import numpy as np
import pytest

from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.data.views import to_uint8
from diffaug_fast.eval.fidelity import fidelity_command
from diffaug_fast.eval.fidelity_sample_size import (FID_MIN_SAMPLES, IS_MIN_PER_SPLIT, IS_SPLITS, KID_SUBSET_SIZE,
                                                     sample_size_warnings)


def _metrics_warned(warnings):
    return [w.split()[0] for w in warnings]


def test_enough_samples_give_no_warning():
    assert sample_size_warnings(50_000, 10_000, 2048, "inception") == []
    assert sample_size_warnings(FID_MIN_SAMPLES, FID_MIN_SAMPLES, 64, "fmnist-classifier") == []


def test_a_handful_of_samples_warns_about_every_metric():
    warnings = sample_size_warnings(6, 30, 64, "fmnist-classifier")
    assert _metrics_warned(warnings) == ["FID", "IS", "KID"]
    assert "rank-deficient" in warnings[0] and "64-dimensional" in warnings[0]
    assert "3 split(s) of 2" in warnings[1]


def test_fid_is_meaningless_up_to_the_feature_width_and_biased_below_the_minimum():
    assert "rank-deficient" in sample_size_warnings(2048, 10_000, 2048, "inception")[0]
    assert "biased" in sample_size_warnings(2049, 10_000, 2048, "inception")[0]
    assert "rank-deficient" in sample_size_warnings(20_000, 64, 64, "fmnist-classifier")[0]  # the reference too
    assert "biased" in sample_size_warnings(FID_MIN_SAMPLES - 1, 10_000, 64, "fmnist-classifier")[0]


def test_is_and_kid_thresholds():
    assert _metrics_warned(sample_size_warnings(IS_SPLITS * IS_MIN_PER_SPLIT - 1, 10_000, 64, "x")) == ["FID", "IS"]
    assert _metrics_warned(sample_size_warnings(20_000, KID_SUBSET_SIZE - 1, 64, "x")) == ["FID", "KID"]
    assert _metrics_warned(sample_size_warnings(20_000, 20_000, 64, "x")) == []


@pytest.fixture
def six_samples(tmp_path):
    images = load_fashion_mnist("train", limit=6)[0]
    np.savez(tmp_path / "samples.npz", images=to_uint8(images).numpy())
    return tmp_path / "samples.npz"


def test_fidelity_of_six_samples_prints_and_stores_the_warnings(six_samples, tmp_path, capsys):
    options = argparse.Namespace(samples=str(six_samples), reference="fmnist", reference_limit=30, extractor=None,
                                 judge=None, bootstrap=50, json=str(tmp_path / "f.json"), device="cpu")
    result = fidelity_command(options)
    lines = capsys.readouterr().out.splitlines()
    assert "95% bootstrap intervals over 50 redraws: FID" in lines[0]  # the numbers, with their intervals
    assert [line.split()[:2] for line in lines[1:]] == [["warning:", "FID"], ["warning:", "IS"], ["warning:", "KID"]]
    stored = json.loads((tmp_path / "f.json").read_text())
    assert stored["warnings"] == result["warnings"] == [line.removeprefix("warning: ") for line in lines[1:]]
    assert "64-dimensional features of fmnist-classifier" in stored["warnings"][0]
