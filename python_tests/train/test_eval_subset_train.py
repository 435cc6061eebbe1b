"""The closing evaluation and the robustness suites on a class-sorted test set (issue 37): ``--eval-limit`` /
``--limit`` / ``--certify-limit`` see every class (a class-stratified subset), the same images whatever the run's
seed, and metrics.json / eval.json say which subset."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from diffaug_fast.config import train_config
from diffaug_fast.data import EVAL_SUBSET_SEED, stratified_subset
from diffaug_fast.diffusion import get_schedule
from diffaug_fast.train.evaluation import evaluate_trained

# 3 classes x 10 test images, sorted by class as an image folder's are: the first 6 are all class 0
LABELS = torch.arange(3).repeat_interleave(10)
IMAGES = torch.arange(30.0).div(30).view(30, 1, 1, 1).expand(30, 1, 8, 8).contiguous()  # image i: all pixels i/30


class AlwaysLastClass(torch.nn.Module):
    """Answers class 2 whatever it sees (a prefix of class-0 images scores 0 %), remembering the images."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t=None):
        self.seen.append(x[:, 0, 0, 0].clone())
        return torch.nn.functional.one_hot(torch.full((len(x),), 2), 3).float()


@pytest.mark.parametrize("seed", [0, 7])
def test_clean_evaluation_limit_sees_every_class_whatever_the_run_seed(seed):
    config = train_config("quick", diffaug="off", de_timesteps=[], eval_limit=6, compile="off", seed=seed)
    model = AlwaysLastClass()
    metrics = evaluate_trained(config, model, None, IMAGES, LABELS, device="cpu")
    assert metrics["eval_images"] == 6 and metrics["eval_subset_class_counts"] == [2, 2, 2]
    assert metrics["eval_subset"] == "class-stratified, 6 of 30 test images, subset seed 0"
    assert metrics["clean_acc"] == pytest.approx(1 / 3)  # the first 6 images gave 0.00 %
    assert metrics["clean_acc_full_test"] == pytest.approx(1 / 3)
    first = (model.seen[0] * 30).round().long()  # which test images the subset's clean pass saw
    assert LABELS[first].tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(first, stratified_subset(LABELS, 6, EVAL_SUBSET_SEED))  # the subset seed, not the run's


def test_noisy_classifier_evaluation_limit_sees_every_class():
    config = train_config("quick", mode="noisy", eval_limit=6, compile="off")
    denoiser = SimpleNamespace(schedule=get_schedule("linear", 100))  # the buckets only need the schedule
    metrics = evaluate_trained(config, AlwaysLastClass(), denoiser, IMAGES, LABELS, device="cpu")
    assert metrics["eval_subset_class_counts"] == [2, 2, 2] and metrics["eval_images"] == 6
    assert metrics["mean_acc_over_t"] == pytest.approx(1 / 3)


def test_no_limit_evaluates_every_image_in_order():
    config = train_config("quick", diffaug="off", de_timesteps=[], eval_limit=None, compile="off")
    model = AlwaysLastClass()
    metrics = evaluate_trained(config, model, None, IMAGES, LABELS, device="cpu")
    assert metrics["eval_subset"] == "all 30 test images" and metrics["eval_subset_class_counts"] == [10, 10, 10]
    assert torch.equal(model.seen[0], IMAGES[:, 0, 0, 0])


@pytest.fixture
def class_sorted_folder(tmp_path):
    """train/ and test/ of 3 classes, each a different grey level (a classifier learns them at once)."""
    root = tmp_path / "folder"
    for split, n in (("train", 16), ("test", 10)):
        for c, grey in (("a", 10), ("b", 128), ("c", 245)):
            (root / split / c).mkdir(parents=True)
            rng = np.random.default_rng(grey)
            for i in range(n):
                pixels = np.clip(grey + rng.normal(0, 8, (28, 28)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture
def folder_run(class_sorted_folder, tmp_path):
    from diffaug_fast.train.classifier import train_classifier

    config = train_config("quick", data=str(class_sorted_folder), diffaug="off", de_timesteps=[], eval_limit=6,
                          batch_size=8, compile="off", warmup_steps=1)
    metrics = train_classifier(config, tmp_path / "run", progress=False)
    return tmp_path / "run", metrics


def test_training_run_on_a_class_sorted_folder_reports_the_stratified_subset(folder_run):
    run, metrics = folder_run
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["eval_subset"] == "class-stratified, 6 of 30 test images, subset seed 0"
    assert saved["eval_subset_class_counts"] == [2, 2, 2] and saved["eval_images"] == 6
    from diffaug_fast.train.report import write_report

    assert "Evaluation subset: class-stratified, 6 of 30 test images, subset seed 0" in write_report(run).read_text()


def test_robustness_suites_on_a_class_sorted_folder_see_every_class(folder_run, tmp_path):
    from diffaug_fast.config import RobustnessConfig
    from diffaug_fast.eval.robustness.suite import evaluate_run

    run, _ = folder_run
    config = RobustnessConfig(suites=["certify"], limit=6, certify_limit=3, de=False, sigmas=[0.25], n0=4, n=8)
    result = evaluate_run(run, config, out_dir=tmp_path / "ev", progress=False)
    assert result["eval_subset_class_counts"] == [2, 2, 2] and result["images"] == 6
    assert result["certify_subset"] == "class-stratified, 3 of 30 test images, subset seed 0"
    assert result["certify_subset_class_counts"] == [1, 1, 1] and result["certify"]["0.25"]["images"] == 3
    report = (tmp_path / "ev" / "eval.md").read_text()
    assert "class-stratified, 6 of 30 test images, subset seed 0; clean accuracy" in report
    assert "Certified: class-stratified, 3 of 30 test images, subset seed 0." in report
