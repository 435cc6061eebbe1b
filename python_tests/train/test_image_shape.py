"""Issue 37: --image-size / --channels are auto by default, resolved from the data where training starts
(train/image_shape.py); Fashion-MNIST and images passed in are used as they are, and a flag that contradicts
them is an error instead of being ignored."""
import pytest
import torch

from diffaug_fast.cli import build_parser, main
from diffaug_fast.config import train_config
from diffaug_fast.data import ArraySource, open_source
from diffaug_fast.errors import DiffAugError
from diffaug_fast.train.image_shape import resolve_image_shape, with_image_shape


def test_fashion_mnist_is_1x28x28_from_the_data():
    config = train_config("quick")
    shape = resolve_image_shape(config, open_source("fmnist", limit=8))
    assert shape.describe() == "1x28x28 (from the data)"
    assert shape.record() == {"image_shape": [1, 28, 28], "image_shape_from": "from the data"}
    resolved = with_image_shape(config, shape)
    assert (resolved.data.image_size, resolved.data.channels) == (28, 1) and config.data.image_size is None


def test_a_flag_that_contradicts_images_used_as_they_are_is_an_error():
    """Before: --channels 3 / --image-size 32 with Fashion-MNIST (or images passed in) were silently ignored."""
    with pytest.raises(DiffAugError, match=r"argument --image-size 32 / --channels 3: the data are 1x28x28 images"):
        resolve_image_shape(train_config("quick", image_size=32, channels=3), open_source("fmnist", limit=8))
    passed_in = ArraySource(torch.zeros(4, 3, 16, 16), torch.arange(4), [])
    assert resolve_image_shape(train_config("quick"), passed_in).chw == (3, 16, 16)
    with pytest.raises(DiffAugError, match=r"argument --channels 1: the data are 3x16x16 images"):
        resolve_image_shape(train_config("quick", channels=1), passed_in)


def test_help_and_flags_say_auto(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--channels {1,3,auto}" in text
    help_of = {a.dest: a.help for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert help_of["data.image_size"].endswith("(default: auto)")
    assert help_of["data.channels"].endswith("(default: auto)")
    denoiser = {a.dest: a.help for a in build_parser()._subparsers._group_actions[0].choices["train-denoiser"]._actions}
    assert denoiser["image_size"].endswith("(default: auto)") and denoiser["channels"].endswith("(default: auto)")
    args = build_parser().parse_args(["train", "--image-size", "auto", "--channels", "3"])
    assert (getattr(args, "data.image_size"), getattr(args, "data.channels")) == (None, 3)


def test_a_channel_count_other_than_1_3_or_auto_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--channels", "2"])
    assert "argument --channels: expected one of 1, 3 or 'auto', got '2'" in capsys.readouterr().err
