"""CIFAR-10 / CIFAR-100 as users hold them: the official *python* batches (``--data cifar10:DIR``).

CIFAR-10: ``DIR/data_batch_1`` … ``data_batch_5``, ``DIR/test_batch``, ``DIR/batches.meta``; CIFAR-100:
``DIR/train``, ``DIR/test``, ``DIR/meta``. ``DIR`` may also be the folder holding ``cifar-10-batches-py`` /
``cifar-100-python`` (where the official tarballs extract to). Each batch is a pickle of a dict with
``b"data"`` (uint8 [N, 3072]: the red, green and blue 32x32 planes of each image, row-major) and
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100); the meta file names the classes.

The pickles are read by a restricted unpickler: only the globals a dict of lists, bytes and numpy arrays
needs are resolved (numpy's array reconstruction, and ``_codecs.encode`` for latin-1 bytes written with
pickle protocol 2 by Python 3); anything else is refused before it is called.
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR_SIDE = 32


@dataclass(frozen=True)
class CifarLayout:
    name: str          # "CIFAR-10"
    folder: str        # the folder the official tarball extracts to
    train: tuple[str, ...]
    test: str
    meta: str
    labels_key: str
    names_key: str


LAYOUTS = {
    "cifar10": CifarLayout("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                           "test_batch", "batches.meta", "labels", "label_names"),
    "cifar100": CifarLayout("CIFAR-100", "cifar-100-python", ("train",), "test", "meta", "fine_labels",
                            "fine_label_names"),
}
_PREFIX = re.compile(r"(cifar[^:/\\]*):", re.IGNORECASE)


def cifar_source(data: str) -> tuple[str, Path] | None:
    """``("cifar10" | "cifar100", DIR)`` for ``--data cifar10:DIR`` / ``cifar100:DIR``, None for anything else.

    An unknown ``cifar…:`` prefix (``cifar11:``, ``CIFAR10:``) is a ValueError, unless the whole string is an
    existing folder (an image folder that happens to be named so)."""
    data = os.fspath(data)
    match = _PREFIX.match(data)
    if match is None:
        return None
    kind, rest = match.group(1), data[match.end():]
    if kind not in LAYOUTS:
        if Path(data).is_dir():
            return None
        raise ValueError(f"argument --data {data!r}: unknown data set prefix {kind + ':'!r}; expected "
                         f"{' or '.join(k + ':DIR' for k in LAYOUTS)} (the official python batches), 'fmnist', or "
                         "a folder of images")
    if not rest:
        raise ValueError(f"argument --data {data!r}: name the folder of the {LAYOUTS[kind].name} python batches, "
                         f"e.g. {kind}:~/data/{LAYOUTS[kind].folder}")
    return kind, Path(rest).expanduser()


def cifar_root(kind: str, directory: str | os.PathLike) -> Path:
    """The folder holding the batch files: ``directory`` itself or its official sub-folder."""
    layout, directory = LAYOUTS[kind], Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"argument --data {kind}:{directory}: {directory} is not a folder (expected the "
                                f"{layout.name} python batches, or the folder holding {layout.folder})")
    nested = directory / layout.folder
    if not (directory / layout.meta).is_file() and nested.is_dir():
        return nested
    return directory


def _file(kind: str, root: Path, name: str) -> Path:
    path = root / name
    if path.is_file():
        return path
    layout = LAYOUTS[kind]
    hint = ""
    other = next((k for k, o in LAYOUTS.items() if k != kind and (root / o.meta).is_file()), None)
    if other is not None:
        hint = f"; this folder holds {LAYOUTS[other].name} batches: use --data {other}:{root}"
    elif any(root.glob("*.tar.gz")):
        hint = f"; extract the official tarball first (tar xzf cifar-*-python.tar.gz gives {layout.folder}/)"
    raise FileNotFoundError(f"argument --data {kind}:{root}: {layout.name} batch file {path} not found (expected "
                            f"{', '.join((*layout.train, layout.test, layout.meta))}){hint}")


# ---------------------------------------------------------------------------------------------------------------
# Reading the pickles without running anything they name.

def _latin1(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 writes bytes into a protocol-2 pickle, and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1", "iso8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only for latin-1 text, got {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1}
    for package in ("numpy.core", "numpy._core"):  # numpy 1 (and the official Python 2 files) / numpy 2 names
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # numpy's protocol-5 arrays
    return allowed


class ForbiddenGlobal(pickle.UnpicklingError):
    pass


class SafeUnpickler(pickle.Unpickler):
    """Resolves only numpy's array-reconstruction globals (and latin-1 ``_codecs.encode``)."""

    ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None


def safe_load(path: Path, what: str) -> object:
    """The pickle at ``path``, unpickled with ``SafeUnpickler``; ValueError naming the file if it is not one."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="bytes").load()
    except ForbiddenGlobal as err:
        raise ValueError(f"argument --data: {path} is not a CIFAR python batch: it refers to {err}, which a CIFAR "
                         f"file never needs; refusing to load it ({what})") from None
    except OSError:
        raise
    except Exception as err:  # truncated or corrupt: EOFError, UnpicklingError, numpy's own errors, ...
        raise ValueError(f"argument --data: {path} is not a readable CIFAR python batch ({what}): truncated or "
                         f"corrupt pickle ({type(err).__name__}: {err})") from None


def _as_dict(obj, path: Path, what: str) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise ValueError(f"argument --data: {path} holds a {type(obj).__name__}, expected the dict of a CIFAR "
                         f"python batch ({what})")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_names(kind: str, root: Path) -> list[str]:
    layout = LAYOUTS[kind]
    path = _file(kind, root, layout.meta)
    meta = _as_dict(safe_load(path, f"{layout.name} meta file"), path, f"{layout.name} meta file")
    names = meta.get(layout.names_key)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in names):
        raise ValueError(f"argument --data: {path} has no {layout.names_key!r} list of class names (the "
                         f"{layout.name} meta file has b{layout.names_key!r})")
    names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]
    if len(names) < 2:
        raise ValueError(f"argument --data: {path} names {len(names)} classes; a classifier needs at least two")
    return names


def cifar_classes(kind: str, directory: str | os.PathLike) -> list[str]:
    """The class names in the meta file (CIFAR-100: the 100 fine labels)."""
    return _read_names(kind, cifar_root(kind, directory))


def _read_batch(kind: str, path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    layout = LAYOUTS[kind]
    what = f"{layout.name} batch"
    batch = _as_dict(safe_load(path, what), path, what)
    data, labels = batch.get("data"), batch.get(layout.labels_key)
    if data is None or labels is None:
        raise ValueError(f"argument --data: {path} lacks the key b'data' or b{layout.labels_key!r} of a {what} "
                         f"(found {sorted(batch)})")
    side = CIFAR_SIDE * CIFAR_SIDE * 3
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != side:
        found = (f"{data.dtype} array of shape {list(data.shape)}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise ValueError(f"argument --data: {path}: b'data' must be a uint8 array of shape [N, {side}] (N images of "
                         f"3x32x32), found a {found}")
    labels = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
    if labels is None or labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"argument --data: {path}: b{layout.labels_key!r} must be a list of integer labels")
    if len(labels) != len(data):
        raise ValueError(f"argument --data: {path} has {len(data)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"argument --data: {path} has labels outside 0..{num_classes - 1} (the classes of the meta "
                         "file)")
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)  # planes -> [N, H, W, RGB]
    return images, labels.astype(np.int64)


def read_cifar(kind: str, directory: str | os.PathLike, split: str = "train",
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The images of a split as uint8 [N, 32, 32, 3] (RGB) and int64 labels [N]; ``limit``: the first N.

    Every batch file of the split must be there; with ``limit`` only the batches it needs are read."""
    if split not in ("train", "test"):
        raise ValueError(f"argument 'split' must be 'train' or 'test', got {split!r}")
    layout, root = LAYOUTS[kind], cifar_root(kind, directory)
    paths = [_file(kind, root, name) for name in (layout.train if split == "train" else (layout.test,))]
    num_classes = len(_read_names(kind, root))
    images, labels, count = [], [], 0
    for path in paths:
        if limit is not None and count >= limit:
            break
        x, y = _read_batch(kind, path, num_classes)
        images.append(x)
        labels.append(y)
        count += len(x)
    x, y = np.concatenate(images), np.concatenate(labels)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    if not len(x):
        raise ValueError(f"argument --data {kind}:{directory}: the {split} batches hold no images")
    return np.ascontiguousarray(x), y
