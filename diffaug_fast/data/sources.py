"""Image sources read one image at a time, so that a training run's memory does not grow with its data set.

A source knows its labels and class names up front (cheap: file names, or the label arrays of an in-memory
set) and decodes an image only when asked: ``source.image(i)`` gives a PIL image (folders) or a uint8
array [C, H, W] (Fashion-MNIST and CIFAR, small enough to hold as uint8). ``data.views`` turns either into
the uint8 [C, S, S] a classifier sees.

Sources are picklable (DataLoader worker processes receive a copy): a folder source is a list of paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
HOLDOUT_EVERY = 10  # without train/ and test/ (or val/) sub-folders, every 10th image of each class is held out
FOLDER_SIDE_MAX = 64  # the largest side an image folder is read at by default (a denoiser's cost grows as its square)


class ImageReadError(ValueError):
    """An image file that cannot be decoded (truncated, not an image, unreadable)."""


@dataclass
class ArraySource:
    """Images already in memory: uint8 [N, C, H, W] (or float in [-1, 1], as callers of the Python API hold them)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    native: bool = True  # train at the images' own size (Fashion-MNIST, caller's tensors); else --image-size

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> torch.Tensor:
        return self.images[i]

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Many images at once (all the same size): the fast path of in-memory sets."""
        return self.images[idx]

    def subset(self, idx: torch.Tensor) -> "ArraySource":
        """Only the images at ``idx`` (e.g. an evaluation subset)."""
        return ArraySource(self.images[idx], self.labels[idx], self.classes, self.native)


@dataclass
class FolderSource:
    """Image files with one label each, decoded on demand."""

    files: list[str]
    labels: torch.Tensor
    classes: list[str]
    root: str

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as im:
                im.load()  # decode now: a truncated file fails here, naming its path
                return im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ImageReadError(f"cannot read image {path}: {err}") from None

    def subset(self, idx: torch.Tensor) -> "FolderSource":
        """Only the files at ``idx``, still undecoded (e.g. an evaluation subset)."""
        return FolderSource([self.files[int(i)] for i in idx], self.labels[idx], self.classes, self.root)


def class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth), sorted by path."""
    found = []
    for base, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(base, n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    return [Path(p) for p in sorted(found)]


def split_root(root: Path) -> dict[str, Path] | None:
    """``root/train`` + ``root/test`` (or ``root/val``) when the folder is already split."""
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    return {"train": root / "train", "test": test} if (root / "train").is_dir() and test is not None else None


def folder_classes(root: str | os.PathLike) -> list[str]:
    """The class names of an image folder: its (train/) sub-folder names, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"argument 'data': {root} is not a folder (expected 'fmnist' or a folder with one "
                                "sub-folder of images per class)")
    split = split_root(root)
    classes = [p.name for p in class_dirs(split["train"] if split else root)]
    if not split and classes == ["train"]:  # else read as one class named "train"
        raise ValueError(f"argument 'data': {root} holds only train/ (no test/ or val/ beside it); expected train/ "
                         "+ test/ (or val/), or one sub-folder per class")
    if len(classes) < 2:
        raise ValueError(f"argument 'data': {root} needs at least two class sub-folders of images, found "
                         f"{len(classes)}")
    return classes


def folder_image_shape(source: FolderSource) -> tuple[int, int]:
    """(size, channels) an image folder trains at when no option or denoiser says: its first image's channels (1 for
    a greyscale mode: L, 1, I, F, LA; else 3) and shorter side, rounded down to a multiple of 4 (what the lean UNet
    needs) and at most ``FOLDER_SIDE_MAX`` (larger photos: --image-size)."""
    from PIL import ImageMode

    image = source.image(0)
    channels = 1 if ImageMode.getmode(image.mode).basemode == "L" else 3
    return min(min(image.size) // 4 * 4, FOLDER_SIDE_MAX), channels


def interleave(labels: list[int], limit: int) -> list[int]:
    """The first ``limit`` positions taking classes in turn, so that a limit keeps every class."""
    first = {}
    for i, y in enumerate(labels):
        first.setdefault(y, i)
    return sorted(range(len(labels)), key=lambda i: (i - first[labels[i]], labels[i]))[:limit]


def folder_source(root: str | os.PathLike, split: str = "train", limit: int | None = None) -> FolderSource:
    """The images of a class-per-sub-folder tree, listed (not decoded).

    ``root/train/<class>/`` and ``root/test/<class>/`` (or ``val/``) are used as given; a plain ``root/<class>/``
    tree is split deterministically, every ``HOLDOUT_EVERY``-th file (sorted by name) of each class going to
    ``"test"``. ``limit``: the first N, classes interleaved."""
    if split not in ("train", "test"):
        raise ValueError(f"argument 'split' must be 'train' or 'test', got {split!r}")
    root = Path(root)
    classes = folder_classes(root)
    layout = split_root(root)
    files, labels = [], []
    for label, name in enumerate(classes):
        if layout:
            found = images_in(layout[split] / name) if (layout[split] / name).is_dir() else []
        else:
            every = images_in(root / name)
            found = [p for i, p in enumerate(every) if (i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) == (split == "test")]
        if not found and split == "train":
            raise ValueError(f"argument 'data': class folder {name!r} in {root} holds no images "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        files += [str(p) for p in found]
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"argument 'data': {root} has no {split} images")
    return first_images(FolderSource(files, torch.tensor(labels, dtype=torch.int64), classes, str(root)), limit)


def first_images(source, limit: int | None):
    """What ``--train-limit N`` keeps of a source: an in-memory set's first N images, an image folder's first N
    with the classes interleaved (its files are sorted by class); None: all of them."""
    if limit is None or limit >= len(source):
        return source
    if isinstance(source, FolderSource):
        return source.subset(torch.tensor(interleave(source.labels.tolist(), limit), dtype=torch.int64))
    return source.subset(torch.arange(limit))
