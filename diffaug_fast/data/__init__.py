"""Datasets. Fashion-MNIST, the default everywhere, is read from Debian's IDX files; image folders; CIFAR-10 / -100
from the official python batches (``cifar.py``)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from diffaug_fast.data.cifar import CIFAR_SIDE, cifar_classes, cifar_source, read_cifar
from diffaug_fast.data.sources import (FOLDER_SIDE_MAX, HOLDOUT_EVERY, IMAGE_SUFFIXES, ArraySource,  # noqa: F401
                                       FolderSource, ImageReadError, first_images, folder_classes,
                                       folder_image_shape, folder_source, images_in)
from diffaug_fast.data.decoded import DecodedImages
from diffaug_fast.data.subsets import (BUILTIN_VAL_SIZE, EVAL_SUBSET_SEED, FOLDER_VAL_FRACTION,  # noqa: F401
                                       SPLIT_SEED, class_counts, describe_split, describe_subset, stratified_subset,
                                       subset_summary, validation_count, validation_split)
from diffaug_fast.data.views import to_unit_range, view

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_SIDE = 28
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


def read_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None,
                       limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 [N, 28, 28] and labels as uint8 [N]."""
    if split not in _FILES:
        raise ValueError(f"argument 'split' must be 'train' or 'test', got {split!r}")
    base = fashion_mnist_root(root)
    image_file, label_file = (_find(base, stem) for stem in _FILES[split])
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None,
                       limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 1, 28, 28] in [-1, 1] and labels as int64 [N]."""
    images, labels = read_fashion_mnist(split, root, limit)
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1).div_(127.5).sub_(1.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_image_folder(root: str | os.PathLike, split: str = "train", *, image_size: int = 28, channels: int = 1,
                      limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a class-per-sub-folder tree as float32 [N, C, S, S] in [-1, 1] and int64 labels, all in memory
    (training streams them instead: ``open_source``). Layout and split: ``sources.folder_source``."""
    _check_shape(image_size, channels)
    source = folder_source(root, split, limit)
    return _decode_all(source, image_size, channels), source.labels


def _check_shape(image_size, channels) -> None:
    if channels not in (1, 3):
        raise ValueError(f"argument 'channels' must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"argument 'image_size' must be an integer >= 8, got {image_size!r}")


def _decode_all(source, image_size: int, channels: int, view_name: str = "fit") -> torch.Tensor:
    x = torch.stack([view(source.image(i), view_name, image_size, channels) for i in range(len(source))])
    return to_unit_range(x)


def load_cifar(kind: str, directory: str | os.PathLike, split: str = "train", *, image_size: int = 32,
               channels: int = 3, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 / -100 python batches (``kind`` "cifar10" / "cifar100") as float32 [N, C, S, S] in [-1, 1] and
    int64 labels; grayscale and resizing as for image folders (``views.fit``); ``limit``: the first N images."""
    _check_shape(image_size, channels)
    images, labels = read_cifar(kind, directory, split, limit)
    source = ArraySource(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels), [])
    if channels == 3 and image_size == CIFAR_SIDE:  # what fit would do, without a PIL round trip per image
        return to_unit_range(source.images.contiguous()), source.labels
    return _decode_all(source, image_size, channels), source.labels


def open_source(data: str, split: str = "train", *, limit: int | None = None, val_size: float | None = 0,
                split_seed: int = SPLIT_SEED):
    """The images of ``--data`` without decoding them all: ``"fmnist"`` and ``"cifar10:DIR"`` / ``"cifar100:DIR"``
    held in memory as uint8 (an ``ArraySource``), an image folder listed and decoded per image (``FolderSource``).

    ``split``: "test", or "train" / "val": the data's training images less / only the validation split
    (``validation_split``: ``val_size`` of them, class-stratified by ``split_seed``; None: ``default_val_size``).
    ``limit`` (train and test): the first N of what is left (``first_images``)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"argument 'split' must be 'train', 'val' or 'test', got {split!r}")
    if split == "test":
        return first_images(_whole_split(data, "test"), limit)
    source = _whole_split(data, "train")
    val_size = default_val_size(data) if val_size is None else val_size
    train_idx, val_idx = validation_split(source.labels, validation_count(val_size, len(source)), split_seed)
    if split == "val":
        return source.subset(val_idx)
    return first_images(source.subset(train_idx) if len(val_idx) else source, limit)


def default_val_size(data: str) -> float:
    """``--val-size auto``: 5 000 of Fashion-MNIST's 60 000 training images; a tenth of anything else's (CIFAR's
    50 000: 5 000 as well; an image folder's, whatever its size)."""
    return BUILTIN_VAL_SIZE if data == "fmnist" else FOLDER_VAL_FRACTION


def _whole_split(data: str, split: str):
    if data == "fmnist":
        images, labels = read_fashion_mnist(split)
        return ArraySource(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                           list(FASHION_MNIST_CLASSES))
    cifar = cifar_source(data)
    if cifar is not None:
        images, labels = read_cifar(*cifar, split)
        return ArraySource(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels),
                           cifar_classes(*cifar), native=False)
    return folder_source(data, split)


def native_shape(data) -> tuple[int, int]:
    """(image size, channels) of the images of ``--data`` as they are: Fashion-MNIST 28, 1; CIFAR 32, 3; in-memory
    images their own; an image folder as its first training image says (``folder_image_shape``). ``data``: the
    ``--data`` string or a source ``open_source`` gave (a folder is then not listed again)."""
    source = data
    if isinstance(data, str):
        if data == "fmnist":
            return FASHION_MNIST_SIDE, 1
        if cifar_source(data) is not None:
            return CIFAR_SIDE, 3
        source = folder_source(data, "train")
    if isinstance(source, ArraySource):
        return int(source.images.shape[-1]), int(source.images.shape[1])
    return folder_image_shape(source)


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


def eval_subset(data: str, split: str = "test", limit: int | None = None, seed: int = EVAL_SUBSET_SEED):
    """(source, summary): the images of ``--data`` an evaluation with ``limit`` sees, as a source (a folder's still
    undecoded), and what metrics record of them (``subset_summary``). ``limit``: a class-stratified subset of that
    many (``stratified_subset`` with ``seed``), not the first N; None: the whole split."""
    source = open_source(data, split)
    idx = stratified_subset(source.labels, limit, seed)
    summary = subset_summary(source.labels, idx, seed, split)
    return (source.subset(idx) if len(idx) < len(source) else source), summary


def source_images(source, *, image_size: int, channels: int, view_name: str = "fit", decode: bool = False):
    """(images, labels) of a source as evaluation reads them: in-memory sets as float32 tensors (as
    ``load_dataset``), an image folder as ``DecodedImages`` (decoded a slice at a time with ``view_name``: "fit" or
    "center"; ``decode``: all at once, a tensor)."""
    if isinstance(source, FolderSource):
        _check_shape(image_size, channels)
        images = DecodedImages(source, view_name, image_size, channels)
        return (images[:] if decode else images), source.labels
    return _array_images(source, image_size, channels), source.labels


def eval_images(data: str, split: str = "test", *, image_size: int, channels: int, view_name: str = "fit",
                limit: int | None = None, seed: int = EVAL_SUBSET_SEED, decode: bool = False):
    """(images, labels) for evaluation: ``eval_subset`` read by ``source_images``."""
    source, _ = eval_subset(data, split, limit, seed)
    return source_images(source, image_size=image_size, channels=channels, view_name=view_name, decode=decode)


def _array_images(source: ArraySource, image_size: int, channels: int) -> torch.Tensor:
    """An in-memory source as float32 in [-1, 1]: Fashion-MNIST at its own size, CIFAR as ``load_cifar``."""
    if source.native:
        return to_unit_range(source.images)
    _check_shape(image_size, channels)
    if tuple(source.images.shape[1:]) == (channels, image_size, image_size):
        return to_unit_range(source.images.contiguous())
    return _decode_all(source, image_size, channels)


def select(images, idx: torch.Tensor) -> torch.Tensor:
    """``images[idx]`` as a tensor; of ``DecodedImages`` only the files at ``idx`` are decoded."""
    return images.subset(idx)[:] if isinstance(images, DecodedImages) else images[idx]


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
    files = [str(p) for p in images_in(root)[:limit]]
    if not files:
        raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return _decode_all(FolderSource(files, torch.zeros(len(files), dtype=torch.int64), [], str(root)), image_size,
                       channels)
