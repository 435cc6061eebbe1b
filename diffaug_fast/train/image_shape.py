"""The image shape a training run reads its data at: ``--image-size`` / ``--channels``, auto by default, resolved once
where training starts; the run's config.json then holds the values used, metrics.json and the report say where they
came from.

Auto takes each from where it is known (``data.native_shape``): Fashion-MNIST and images passed in are used as they
are; CIFAR is 32x32 RGB; an image folder has its first image's channels and the size of the --denoiser's network (the
size its DiffAug copies are denoised at), or, when the run loads no denoiser, its first image's shorter side (a
multiple of 4, at most 64). Whether the denoiser takes that shape is checked next (``checks.check_denoiser``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

from diffaug_fast.config import TrainConfig
from diffaug_fast.data import ArraySource, FolderSource, native_shape
from diffaug_fast.errors import DiffAugError

DATA, OPTIONS = "the data", "the config"  # the config: flags, a preset, a --config file or a resumed run's own


@dataclass(frozen=True)
class ImageShape:
    channels: int
    size: int
    channels_from: str  # DATA, OPTIONS or "the denoiser NAME"
    size_from: str

    @property
    def chw(self) -> tuple[int, int, int]:
        return self.channels, self.size, self.size

    @property
    def text(self) -> str:
        return "x".join(map(str, self.chw))

    @property
    def origin(self) -> str:
        if self.channels_from == self.size_from:
            return f"from {self.size_from}"
        return f"channels from {self.channels_from}, size from {self.size_from}"

    def describe(self) -> str:
        """e.g. "3x32x32 (from the data)": the start-of-training line and the report say it."""
        return f"{self.text} ({self.origin})"

    def record(self) -> dict:
        """What metrics.json keeps of it."""
        return {"image_shape": list(self.chw), "image_shape_from": self.origin}


def resolve_image_shape(config: TrainConfig, source, denoiser=None) -> ImageShape:
    """The shape ``config`` trains at on ``source`` (what ``data.open_source`` gave, or the images passed in) with
    ``denoiser`` (None when the run loads none)."""
    data = config.data
    if isinstance(source, ArraySource) and source.native:
        return _as_they_are(config, source)
    native = cache(lambda: native_shape(source))  # a folder decodes its first image only when asked
    channels = (data.channels, OPTIONS) if data.channels is not None else (native()[1], DATA)
    if data.image_size is not None:
        size = (data.image_size, OPTIONS)
    elif isinstance(source, FolderSource) and denoiser is not None and denoiser.image_shape is not None:
        size = (denoiser.image_shape[-1], f"the denoiser {config.diffaug.denoiser!r}")
    else:
        size = (native()[0], DATA)
    return ImageShape(channels[0], size[0], channels[1], size[1])


def with_image_shape(config: TrainConfig, shape: ImageShape) -> TrainConfig:
    """``config`` with the resolved values in place of auto (a copy: the caller's config is left as it was)."""
    return replace(config, data=replace(config.data, image_size=shape.size, channels=shape.channels))


def _as_they_are(config: TrainConfig, source: ArraySource) -> ImageShape:
    """Fashion-MNIST and in-memory images are not resized: a --image-size / --channels that differs is an error."""
    size, channels = native_shape(source)
    given = {"--image-size": (config.data.image_size, size), "--channels": (config.data.channels, channels)}
    wrong = [f"{flag} {value}" for flag, (value, own) in given.items() if value is not None and value != own]
    if wrong:
        raise DiffAugError(f"argument {' / '.join(wrong)}: the data are {channels}x{size}x{size} images (Fashion-MNIST "
                           "and images passed in are used as they are); leave --image-size / --channels auto")
    return ImageShape(channels, size, DATA, DATA)

