"""One builder for every classifier a run trains, from plain arguments."""
from __future__ import annotations

from torch import nn

from diffaug_fast.models.classifiers import build_classifier
from diffaug_fast.models.noisy import build_noisy_classifier

MODES = ("clean", "noisy", "da")  # what the classifier sees: images, (x_t, t), or (x_t, x0_hat, t)
# time-conditioned ResNets of noisy / DA classifiers, by name
TIME_WIDTHS = {"resnet-small": (16, 32, 64), "resnet-medium": (32, 64, 128), "wrn-16-4": (64, 128, 256)}


def build_model(mode: str, arch: str, *, denoiser=None, num_classes: int = 10, in_channels: int = 1,
                image_size: int = 28, norm: str = "batch", fusion: str = "input") -> nn.Module:
    """A clean-image classifier (``mode='clean'``) or a noisy / DA classifier of x_t built on ``denoiser``."""
    if mode == "clean":
        return build_classifier(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                norm=norm)
    if mode not in MODES:
        raise ValueError(f"argument 'mode' is {mode!r}; expected one of {', '.join(MODES)}")
    if arch not in TIME_WIDTHS:
        raise ValueError(f"argument 'model' is {arch!r}; a {mode} classifier is a time-conditioned ResNet: "
                         f"expected one of {', '.join(TIME_WIDTHS)}")
    return build_noisy_classifier(mode, denoiser, num_classes=num_classes, in_channels=in_channels, fusion=fusion,
                                  widths=TIME_WIDTHS[arch])


def num_classes_of(state: dict) -> int:
    """The number of classes of a classifier state dict (its last linear layer's rows)."""
    for key in ("fc.weight", "net.fc.weight", "head.weight", "heads.head.weight"):
        if key in state:
            return int(state[key].shape[0])
    raise ValueError("cannot tell the number of classes of this classifier state (no known output layer)")
