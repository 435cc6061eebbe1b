"""The run-folder format: every file a run folder holds is named here, once, and written atomically.

A ``diffaug-fast train`` / ``train-denoiser`` run folder::

    config.json       the run's options (nested sections; earlier flat files still load)
    checkpoint.pt     atomic, checksummed training state (+ checkpoint.pt.prev, the one before)
    metrics.jsonl     one line per logged step
    metrics.json      the final evaluation
    classes.json      class names, index order
    report.md, *.png  the training report
    eval.json, eval.md, eval.partial.json   ``diffaug-fast eval``
    ema.safetensors + ema.json              an exported denoiser (train-denoiser)
    snapshots/step-N.safetensors (+ .json)  its EMA weights at step N (train-denoiser --snapshot-every)
    denoiser.json, data.json                where the run's denoiser (+ its sha256) and data are (runs/provenance.py)
    error.log         the traceback of a run that failed with an internal error
    study_run.json    a declared study's run: the machine and commit that made it (``diffaug-fast study run``)

A ``diffaug-fast sample`` folder::

    samples.npz, samples.png   the images (uint8, + labels when guided) and a grid of the first ones
    samples.partial/           the finished batches of an unfinished draw (removed when it completes)
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable

from diffaug_fast.errors import DiffAugError

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
CLASSES = "classes.json"
REPORT = "report.md"
EVAL = "eval.json"
EVAL_REPORT = "eval.md"
EVAL_PARTIAL = "eval.partial.json"
DENOISER_WEIGHTS = "ema.safetensors"
SNAPSHOTS = "snapshots"
DENOISER_RECORD = "denoiser.json"
DATA_RECORD = "data.json"
DENOISER_REPORT = "x0_mse_per_t.json"
DENOISER_SUMMARY = "x0_mse_summary.json"  # its means over t ranges, as plain keys
ERROR_LOG = "error.log"
STUDY_RUN = "study_run.json"
SAMPLES = "samples.npz"
SAMPLES_GRID = "samples.png"
SAMPLE_BATCHES = "samples.partial"
# the pictures commands write beside those files: an --out holding them is an output folder, not image data
PICTURES = ("forward_process.png", "curves.png", "acc_vs_t.png", "acc_per_t_bucket.png", "acc_vs_severity.png",
            "certified_accuracy.png", "samples_ddim50.png", "diffaug_examples.png", "gradients.png")
OUTPUT_NAMES = (CONFIG, CHECKPOINT, METRICS_LOG, METRICS, CLASSES, REPORT, EVAL, EVAL_REPORT, EVAL_PARTIAL,
                DENOISER_WEIGHTS, SNAPSHOTS, DENOISER_RECORD, DATA_RECORD, DENOISER_REPORT, DENOISER_SUMMARY,
                ERROR_LOG, STUDY_RUN, SAMPLES, SAMPLES_GRID, SAMPLE_BATCHES) + PICTURES
# how each training command's run folder is described in messages, by run_kind's answer
RUN_KINDS = {"train": "`diffaug-fast train` classifier run",
             "train-denoiser": "`diffaug-fast train-denoiser` denoiser run"}
_SCAN = 32  # entries looked at per folder by image_data: a hint, not an inventory of an ImageNet tree
SPLITS = ("train", "test", "val")  # an image folder already split holds one class folder per class in each


def run_kind(folder: str | os.PathLike) -> str | None:
    """The command whose run ``folder`` holds, "train" or "train-denoiser" (None: no run started there), told by
    what both write before their first step: a classifier's classes.json and sectioned config.json, a
    denoiser's flat config.json (its "kind": vp / ve) and, once finished, its export."""
    folder = Path(folder)
    if (folder / CLASSES).is_file():
        return "train"
    if (folder / DENOISER_WEIGHTS).is_file():
        return "train-denoiser"
    try:
        config = read_json(folder / CONFIG)
    except (ValueError, OSError):
        return None
    if not isinstance(config, dict):
        return None
    if config.get("kind") in ("vp", "ve"):
        return "train-denoiser"
    return "train" if "diffaug" in config or "model" in config else None


def holds_output(folder: Path) -> bool:
    """``folder`` holds a file one of our commands writes (a run, a draw, a report)."""
    return any((folder / name).exists() for name in OUTPUT_NAMES)


def image_data(folder: str | os.PathLike) -> str | None:
    """What makes ``folder`` image data rather than an output folder ("images", "class sub-folders of images"),
    or None: it holds images, directly or in class sub-folders (train/ test/ val/ ones looked into once more), and
    none of our files. Deeper images do not count: a project folder may well keep its data beside its runs."""
    folder = Path(folder)
    if not folder.is_dir() or holds_output(folder):
        return None
    if _holds_images(folder):
        return "images"
    inside = [sub for sub in _subfolders(folder) if not holds_output(sub)]
    if any(_holds_images(sub) or (sub.name in SPLITS and any(map(_holds_images, _subfolders(sub)))) for sub in inside):
        return "class sub-folders of images"
    return None


def _first_entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as scan:
        return list(islice(scan, _SCAN))


def _holds_images(folder: Path) -> bool:
    from diffaug_fast.data.sources import IMAGE_SUFFIXES

    return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in _first_entries(folder))


def _subfolders(folder: Path) -> list[Path]:
    return [Path(e.path) for e in _first_entries(folder) if e.is_dir()]


def make_folder(folder: str | os.PathLike, option: str = "--out") -> Path:
    """Create a run's output folder; a path that cannot be one (a read-only or virtual file system) is a one-line
    error naming ``option``, not an errno."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DiffAugError(f"argument {option}: cannot create the folder {folder} ({err.strerror or err})") from None
    return folder


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, value) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=2))


def write_array_atomic(path: str | os.PathLike, array) -> Path:
    """``np.save`` through a temporary file and a rename."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)
    return path


@dataclass
class Chunks:
    """An array too large to hold at once, given as its parts along the first axis (``write_npz_atomic``)."""

    shape: tuple[int, ...]
    dtype: object
    parts: Iterable


def write_npz_atomic(path: str | os.PathLike, **arrays) -> Path:
    """``np.savez_compressed`` through a temporary file and a rename; an array given as ``Chunks`` is written one
    part at a time, so that only one part is ever in memory (a 50 000-image draw need not fit twice)."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for name, array in arrays.items():
                with archive.open(name + ".npy", "w", force_zip64=True) as f:
                    if not isinstance(array, Chunks):
                        np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
                        continue
                    dtype, shape = np.dtype(array.dtype), tuple(array.shape)
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
                    rows = 0
                    for part in array.parts:
                        if part.dtype != dtype or tuple(part.shape[1:]) != shape[1:]:
                            raise ValueError(f"{name}: a part is {part.dtype} {tuple(part.shape)}; expected {dtype} "
                                             f"[*, {', '.join(map(str, shape[1:]))}]")
                        rows += len(part)
                        f.write(np.ascontiguousarray(part).tobytes())
                    if rows != shape[0]:
                        raise ValueError(f"{name}: its parts hold {rows} rows; expected {shape[0]}")
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written archive is never left behind
        raise
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike, default=None):
    """The JSON value in ``path``; ``default`` when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def append_log(path: str | os.PathLike):
    """The metrics log opened for appending (line-buffered JSON lines)."""
    return open(path, "a", buffering=1)


def truncate_log(path: str | os.PathLike, step: int) -> None:
    """Drop log lines past ``step`` (the checkpoint a resumed run restarts from): no duplicated steps."""
    path = Path(path)
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    write_text_atomic(path, "".join(ln + "\n" for ln in lines))
