"""Batch augmentations and classifier builders."""
import pytest
import torch

from diffaug_fast.models.classifiers import CLASSIFIERS, build_classifier
from diffaug_fast.train.augmix import augmix
from diffaug_fast.train.transforms import crop_flip, crop_flip_params


def test_crop_flip_identity_shift_and_mirror():
    x = torch.randn(3, 2, 5, 7)
    centre = torch.tensor([[2, 2, 0], [2, 2, 1], [0, 4, 0]])
    out = crop_flip(x, centre)
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], x[1].flip(-1))
    # shifted up-left by 2 rows / right by 2 columns: padding (-1) comes in on the top and right
    assert (out[2, :, :2] == -1).all() and (out[2, :, :, -2:] == -1).all()
    torch.testing.assert_close(out[2, :, 2:, :-2], x[2, :, :-2, 2:])


def test_crop_flip_params_are_seeded():
    a = crop_flip_params(64, torch.Generator().manual_seed(1))
    b = crop_flip_params(64, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a[:, :2].min() >= 0 and a[:, :2].max() <= 4 and set(a[:, 2].tolist()) == {0, 1}


def test_augmix_per_image_seeds():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    seeds = torch.tensor([1, 2, 3, 4])
    a, b = augmix(x, seeds), augmix(x, seeds)
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(augmix(x[2:3], seeds[2:3]), a[2:3])  # an image's result does not depend on its batch
    assert not torch.equal(a, x)


@pytest.mark.parametrize("name", [n for n in CLASSIFIERS if n not in ("wrn-28-10", "vit_b_16")])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_classifiers_give_logits(name, norm):
    model = build_classifier(name, num_classes=7, in_channels=1, image_size=28, norm=norm)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_unknown_classifier_is_named():
    with pytest.raises(ValueError, match="unknown classifier 'resnet9000'"):
        build_classifier("resnet9000")
