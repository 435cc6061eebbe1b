"""Evaluation subsets (issue 37): a limit takes a class-stratified, seed-fixed subset, not the first N of a test set
that may be sorted by class; an image folder decodes only the images of the subset."""
import numpy as np
import pytest
import torch
from PIL import Image

from diffaug_fast.data import (EVAL_SUBSET_SEED, DecodedImages, eval_images, eval_subset, select, stratified_subset,
                               subset_summary)
from diffaug_fast.data.subsets import class_quotas, describe_subset

CLASS_SORTED = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)


def test_same_subset_on_every_call_sorted_and_unique():
    a, b = stratified_subset(CLASS_SORTED, 10), stratified_subset(CLASS_SORTED, 10)
    assert torch.equal(a, b) and a.dtype == torch.int64
    assert a.tolist() == sorted(set(a.tolist()))  # sorted, no index twice
    assert int(a.min()) >= 0 and int(a.max()) < len(CLASS_SORTED)
    assert torch.equal(stratified_subset(CLASS_SORTED, 10, seed=EVAL_SUBSET_SEED), a)


def test_class_sorted_labels_give_every_class_in_proportion():
    idx = stratified_subset(CLASS_SORTED, 10)
    assert torch.bincount(CLASS_SORTED[idx]).tolist() == [5, 3, 2]  # the prefix would be ten of class 0
    balanced = torch.arange(3).repeat_interleave(10)
    assert torch.bincount(balanced[stratified_subset(balanced, 6)]).tolist() == [2, 2, 2]


def test_largest_remainder_rounding():
    gen = torch.Generator().manual_seed(0)
    assert class_quotas([7, 7, 6], 10, gen) in ([4, 3, 3], [3, 4, 3])  # 3.5, 3.5, 3.0: one extra to a .5 class
    assert class_quotas([90, 5, 5], 10, gen) in ([9, 1, 0], [9, 0, 1])
    quotas = class_quotas([10] * 5, 3, gen)  # fewer images than classes: three classes get one each
    assert sorted(quotas) == [0, 0, 1, 1, 1]


def test_whole_set_when_the_limit_is_not_smaller():
    for n in (None, len(CLASS_SORTED), 10**6):
        assert torch.equal(stratified_subset(CLASS_SORTED, n), torch.arange(len(CLASS_SORTED)))


def test_another_seed_picks_other_images_with_the_same_counts():
    a, b = stratified_subset(CLASS_SORTED, 10, seed=0), stratified_subset(CLASS_SORTED, 10, seed=1)
    assert not torch.equal(a, b)
    assert torch.bincount(CLASS_SORTED[a]).tolist() == torch.bincount(CLASS_SORTED[b]).tolist()


def test_summary_says_which_subset():
    idx = stratified_subset(CLASS_SORTED, 10)
    assert subset_summary(CLASS_SORTED, idx) == {
        "eval_subset": "class-stratified, 10 of 100 test images, subset seed 0", "eval_subset_class_counts": [5, 3, 2]}
    assert describe_subset(100, 100) == "all 100 test images"


@pytest.fixture
def class_sorted_folder(tmp_path):
    """3 classes x 10 test images (and 4 training images each), every class a different grey level."""
    for split, n in (("train", 4), ("test", 10)):
        for c, grey in (("a", 0), ("b", 120), ("c", 250)):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((28, 28), grey, np.uint8)).save(tmp_path / split / c / f"{i}.png")
    return tmp_path


def test_folder_limit_sees_every_class_and_decodes_only_the_subset(class_sorted_folder):
    source, summary = eval_subset(str(class_sorted_folder), "test", 6)
    assert len(source.files) == 6 and source.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert summary["eval_subset_class_counts"] == [2, 2, 2]
    images, labels = eval_images(str(class_sorted_folder), "test", limit=6, image_size=28, channels=1)
    assert isinstance(images, DecodedImages) and len(images) == 6 and labels.tolist() == [0, 0, 1, 1, 2, 2]
    greys = images[:].flatten(1).mean(1)
    assert torch.allclose(greys, torch.tensor([0, 0, 120, 120, 250, 250]) / 127.5 - 1)


def test_select_decodes_only_the_chosen_files(class_sorted_folder):
    everything, labels = eval_images(str(class_sorted_folder), "test", image_size=28, channels=1)
    idx = stratified_subset(labels, 6)
    chosen = select(everything, idx)
    assert isinstance(chosen, torch.Tensor) and torch.equal(chosen, everything[:][idx])
    assert everything.subset(idx).source.files == [everything.source.files[i] for i in idx.tolist()]


def test_in_memory_limit_is_the_stratified_rows_of_the_whole_split():
    from diffaug_fast.data import load_fashion_mnist

    x, y = load_fashion_mnist("test")
    sub_x, sub_y = eval_images("fmnist", limit=100, image_size=28, channels=1)
    idx = stratified_subset(y, 100)
    assert torch.equal(sub_x, x[idx]) and torch.equal(sub_y, y[idx])
    assert torch.bincount(sub_y).tolist() == [10] * 10


@pytest.mark.parametrize("image_size, channels", [(32, 3), (16, 1)])
def test_cifar_limit_is_the_stratified_rows_as_load_dataset_reads_them(tmp_path, image_size, channels):
    from diffaug_fast.data import load_dataset
    from test_cifar import write_cifar10

    data = f"cifar10:{write_cifar10(tmp_path / 'c10')}"
    x, y = load_dataset(data, "test", image_size=image_size, channels=channels)
    sub_x, sub_y = eval_images(data, limit=10, image_size=image_size, channels=channels)
    idx = stratified_subset(y, 10)
    assert torch.equal(sub_x, x[idx]) and torch.equal(sub_y, y[idx]) and torch.bincount(sub_y).tolist() == [1] * 10
