"""Datasets. Fashion-MNIST, the default everywhere, is read from Debian's IDX files; image folders; CIFAR-10 / -100
from the official python batches (``cifar.py``)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from diffaug_fast.data.cifar import CIFAR_SIDE, cifar_classes, cifar_source, read_cifar

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
ROOT_ENV = "DIFFAUG_FAST_FASHION_MNIST"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def fashion_mnist_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get(ROOT_ENV) or FASHION_MNIST_ROOT)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}. Install it with "
        f"`apt-get install dataset-fashion-mnist`, or point ${ROOT_ENV} (or --data-root) at a folder holding "
        "the IDX files.")


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format), optionally gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None,
                       limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 1, 28, 28] in [-1, 1] and labels as int64 [N]."""
    if split not in _FILES:
        raise ValueError(f"argument 'split' must be 'train' or 'test', got {split!r}")
    base = fashion_mnist_root(root)
    image_file, label_file = (_find(base, stem) for stem in _FILES[split])
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1).div_(127.5).sub_(1.0)
    return x, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------------------------
# A folder of the user's own images, one sub-folder per class (torchvision's ImageFolder layout).

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
HOLDOUT_EVERY = 10  # without train/ and test/ sub-folders, every 10th image of each class is held out for testing


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _split_root(root: Path) -> dict[str, Path] | None:
    """``root/train`` + ``root/test`` (or ``root/val``) when the folder is already split."""
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    return {"train": root / "train", "test": test} if (root / "train").is_dir() and test is not None else None


def folder_classes(root: str | os.PathLike) -> list[str]:
    """The class names of an image folder: its (train/) sub-folder names, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"argument 'data': {root} is not a folder (expected 'fmnist' or a folder with one "
                                "sub-folder of images per class)")
    split = _split_root(root)
    classes = [p.name for p in _class_dirs(split["train"] if split else root)]
    if len(classes) < 2:
        raise ValueError(f"argument 'data': {root} needs at least two class sub-folders of images, found "
                         f"{len(classes)}")
    return classes


def _fit(im, image_size: int, channels: int) -> np.ndarray:
    """A PIL image as uint8 [C, S, S]: grayscale (PIL's "L") or RGB, centre square, bicubic resize."""
    from PIL import Image

    im = im.convert("L" if channels == 1 else "RGB")
    side = min(im.size)  # centre square, then resize: keeps the aspect ratio of the content
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return _fit(im, image_size, channels)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def load_image_folder(root: str | os.PathLike, split: str = "train", *, image_size: int = 28, channels: int = 1,
                      limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a class-per-sub-folder tree as float32 [N, C, S, S] in [-1, 1] and int64 labels.

    ``root/train/<class>/`` and ``root/test/<class>/`` (or ``val/``) are used as given; a plain
    ``root/<class>/`` tree is split deterministically, every ``HOLDOUT_EVERY``-th file (sorted by
    name) of each class going to ``"test"``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"argument 'split' must be 'train' or 'test', got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"argument 'channels' must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"argument 'image_size' must be an integer >= 8, got {image_size!r}")
    root = Path(root)
    classes = folder_classes(root)
    layout = _split_root(root)
    files, labels = [], []
    for label, name in enumerate(classes):
        if layout:
            found = _images_in(layout[split] / name) if (layout[split] / name).is_dir() else []
        else:
            every = _images_in(root / name)
            found = [p for i, p in enumerate(every) if (i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) == (split == "test")]
        if not found and split == "train":
            raise ValueError(f"argument 'data': class folder {name!r} in {root} holds no images "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"argument 'data': {root} has no {split} images")
    if limit is not None:  # interleave classes so that a limit keeps every class
        order = sorted(range(len(files)), key=lambda i: (i - labels.index(labels[i]), labels[i]))[:limit]
        files, labels = [files[i] for i in order], [labels[i] for i in order]
    x = np.stack([_read_image(p, image_size, channels) for p in files])
    return (torch.from_numpy(x.astype(np.float32)).div_(127.5).sub_(1.0),
            torch.tensor(labels, dtype=torch.int64))


def load_cifar(kind: str, directory: str | os.PathLike, split: str = "train", *, image_size: int = 32,
               channels: int = 3, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 / -100 python batches (``kind`` "cifar10" / "cifar100") as float32 [N, C, S, S] in [-1, 1] and
    int64 labels; grayscale and resizing as for image folders (``_fit``); ``limit``: the first N images."""
    if channels not in (1, 3):
        raise ValueError(f"argument 'channels' must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"argument 'image_size' must be an integer >= 8, got {image_size!r}")
    images, labels = read_cifar(kind, directory, split, limit)
    if channels == 3 and image_size == CIFAR_SIDE:  # what _fit would do, without a PIL round trip per image
        x = images.transpose(0, 3, 1, 2)
    else:
        from PIL import Image

        x = np.stack([_fit(Image.fromarray(im), image_size, channels) for im in images])
    return torch.from_numpy(x.astype(np.float32)).div_(127.5).sub_(1.0), torch.from_numpy(labels)


def load_dataset(data: str, split: str = "train", *, limit: int | None = None, image_size: int = 28,
                 channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``"fmnist"`` (Fashion-MNIST), ``"cifar10:DIR"`` / ``"cifar100:DIR"`` (the official python batches; see
    ``load_cifar``) or the path of an image folder (see ``load_image_folder``)."""
    if data == "fmnist":
        return load_fashion_mnist(split, limit=limit)
    cifar = cifar_source(data)
    if cifar is not None:
        return load_cifar(*cifar, split, image_size=image_size, channels=channels, limit=limit)
    return load_image_folder(data, split, image_size=image_size, channels=channels, limit=limit)


def dataset_classes(data: str) -> list[str]:
    if data == "fmnist":
        return list(FASHION_MNIST_CLASSES)
    cifar = cifar_source(data)
    return cifar_classes(*cifar) if cifar is not None else folder_classes(data)


def load_unlabeled_folder(root: str | os.PathLike, *, image_size: int = 28, channels: int = 1,
                          limit: int | None = None) -> torch.Tensor:
    """Every image under ``root`` (any layout), e.g. an out-of-distribution set: float32 [N, C, S, S] in [-1, 1]."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of images")
    files = _images_in(root)[:limit]
    if not files:
        raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    x = np.stack([_read_image(p, image_size, channels) for p in files])
    return torch.from_numpy(x.astype(np.float32)).div_(127.5).sub_(1.0)
