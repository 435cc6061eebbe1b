"""The validation split (issue 38): carved from the training images, class-stratified, fixed by --split-seed (not
the run's seed), never trained on, the same on resume; --val-size 0 is the behaviour before the option; an image
folder with train/ + val/ keeps val/ as its test set and carves validation from train/."""
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from diffaug_fast.config import train_config, train_config_from_dict, to_dict
from diffaug_fast.data import (BUILTIN_VAL_SIZE, FOLDER_VAL_FRACTION, default_val_size, open_source,
                               read_fashion_mnist, validation_count, validation_split)
from diffaug_fast.errors import DiffAugError
from diffaug_fast.train.checks import check_same_run
from diffaug_fast.train.classifier import train_classifier
from diffaug_fast.train.step_data import training_source, validation_images


def _digests(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images}


def test_split_is_disjoint_complete_and_stratified():
    labels = torch.arange(10).repeat_interleave(100)[torch.randperm(1000, generator=torch.Generator().manual_seed(3))]
    train, val = validation_split(labels, 150, seed=0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert torch.bincount(labels[val], minlength=10).tolist() == [15] * 10
    assert torch.equal(validation_split(labels, 150, seed=0)[1], val)  # a fixed split, not a fresh draw
    assert not torch.equal(validation_split(labels, 150, seed=1)[1], val)  # --split-seed chooses another
    assert validation_split(labels, 0)[1].numel() == 0 and len(validation_split(labels, 0)[0]) == 1000


def test_fashion_mnist_split_never_overlaps_what_trains_and_ignores_the_run_seed():
    config = train_config("default", val_size=2000, seed=0)
    train, val = training_source(config), open_source("fmnist", "val", val_size=2000)
    assert len(train) == 58000 and len(val) == 2000
    assert torch.bincount(val.labels).tolist() == [200] * 10  # Fashion-MNIST's 6 000 per class, in proportion
    assert _digests(val.images).isdisjoint(_digests(train.images))  # no validation image trains (by content)
    other_seed = training_source(train_config("default", val_size=2000, seed=7))
    assert torch.equal(other_seed.labels, train.labels) and torch.equal(other_seed.images, train.images)
    moved = open_source("fmnist", "val", val_size=2000, split_seed=1)
    assert not torch.equal(moved.images, val.images)


def test_train_limit_counts_after_the_validation_split():
    limited = training_source(train_config("default", val_size=2000, train_limit=300))
    held_out = _digests(open_source("fmnist", "val", val_size=2000).images)
    assert len(limited) == 300 and _digests(limited.images).isdisjoint(held_out)


def test_val_size_zero_is_the_behaviour_before_the_option():
    images, labels = read_fashion_mnist("train", limit=500)
    source = training_source(train_config("default", val_size=0, train_limit=500))
    assert torch.equal(source.images[:, 0], torch.from_numpy(images.copy()))
    assert torch.equal(source.labels, torch.from_numpy(labels.astype(np.int64)))
    assert validation_images(train_config("default", val_size=0)) is None


def test_auto_sizes_and_fractions():
    assert train_config("default").data.val_size == BUILTIN_VAL_SIZE  # recorded as the number auto stands for
    assert default_val_size("fmnist") == 5000 and default_val_size("/some/folder") == FOLDER_VAL_FRACTION
    assert validation_count(0.1, 95) == 10 and validation_count(300, 1000) == 300 and validation_count(0, 10) == 0


@pytest.mark.parametrize("bad", [-1, 2.5])
def test_bad_val_size_names_the_option(bad):
    with pytest.raises(ValueError, match="--val-size"):
        train_config("default", val_size=bad)


def test_a_val_size_leaving_nothing_to_train_names_the_option():
    with pytest.raises(ValueError, match="--val-size 60000 leaves no training images"):
        open_source("fmnist", "train", val_size=60000)


def test_configs_written_before_the_option_load_as_val_size_zero():
    saved = to_dict(train_config("default"))
    del saved["data"]["val_size"]
    assert train_config_from_dict(saved).data.val_size == 0


def test_resuming_with_another_split_is_refused():
    saved = to_dict(train_config("default", val_size=5000))
    check_same_run(saved, train_config("default", val_size=5000), "checkpoint.pt")  # the same split resumes
    for change in (dict(val_size=4000), dict(split_seed=3)):
        with pytest.raises(DiffAugError, match=next(iter(change))):
            check_same_run(saved, train_config("default", **{"val_size": 5000, **change}), "checkpoint.pt")


def _folder(root, layout):
    """Tiny grey images, 3 classes: ``layout`` maps a split folder ('' for none) to images per class."""
    for split, per_class in layout.items():
        for c, grey in (("a", 0), ("b", 120), ("c", 250)):
            folder = root / split / c if split else root / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(np.full((12, 12), grey + i % 5, np.uint8)).save(folder / f"{i:03d}.png")
    return root


def test_folder_with_train_and_val_keeps_val_as_test_and_carves_validation_from_train(tmp_path):
    root = _folder(tmp_path / "tree", {"train": 20, "val": 4})
    test = open_source(str(root), "test")
    assert all("/val/" in f for f in test.files) and len(test) == 12
    val = open_source(str(root), "val", val_size=None)  # auto: a tenth of train/
    train = open_source(str(root), "train", val_size=None)
    assert len(val) == 6 and all("/train/" in f for f in val.files)
    assert torch.bincount(val.labels).tolist() == [2, 2, 2]
    assert set(val.files).isdisjoint(train.files) and len(train) == 54


def test_a_run_reports_accuracy_on_validation_and_test(tmp_path):
    config = train_config("default", diffaug="off", max_steps=2, train_limit=256, batch_size=64, eval_limit=50,
                          de_timesteps=[], compile="off", val_size=300, noise_draws=2)
    metrics = train_classifier(config, tmp_path / "run", progress=False)
    assert metrics["val_images"] == 300 and 0 <= metrics["clean_acc_val"] <= 1
    assert len(metrics["noisy_acc_val_draws"]) == 2 and len(metrics["noisy_acc_full_test_draws"]) == 2
    assert metrics["noisy_acc_full_test"] == pytest.approx(sum(metrics["noisy_acc_full_test_draws"]) / 2)
    assert metrics["noisy_acc_full_test_draws"][0] != metrics["noisy_acc_full_test_draws"][1]  # independent draws
    assert "split seed 0" in metrics["val_split"] and "clean_acc_full_test" in metrics
