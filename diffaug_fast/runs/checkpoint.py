"""Atomic, checksummed training checkpoints that survive crashes, kills and full disks.

* The file carries its own SHA-256 (a header before the ``torch.save`` payload), so the check and the
  data are replaced together by one rename; files of the earlier layout (checksum in a ``.sha256``
  file beside them) still load.
* A save writes and fsyncs a temporary file, moves the current checkpoint to ``<name>.prev`` and renames
  the new one into place: killed at any instant, the folder holds a complete checkpoint.
* Loading verifies the checksum; a corrupted or missing checkpoint falls back to ``<name>.prev`` with a
  warning, so one bad write costs at most one checkpoint interval.
* A failed write (disk full, file-size limit, permissions) removes the partial file, keeps the good
  checkpoints, and raises an ``OSError`` that says so.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

import torch

from diffaug_fast.errors import DiffAugError

MAGIC = b"DIFFAUG-FAST-CKPT-1\n"


class CheckpointWriteError(DiffAugError, OSError):
    """A checkpoint could not be written (disk full, size limit, permissions); the previous one is kept."""


def previous_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".prev")


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """Whether a checkpoint (or its previous version, after an interrupted save) is there to resume from."""
    return Path(path).exists() or previous_path(path).exists()


def save_atomic(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (keeping the last good one as ``<name>.prev``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointWriteError(err.errno, f"could not write checkpoint {path} ({err.strerror or err}); the previous "
                                 "checkpoint is kept") from None
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)  # the earlier layout's side file


def _read_verified(path: Path) -> dict:
    data = path.read_bytes()
    if data.startswith(MAGIC):
        header_end = len(MAGIC) + 65
        expected, payload = data[len(MAGIC):header_end - 1].decode(errors="replace"), data[header_end:]
        if hashlib.sha256(payload).hexdigest() != expected:
            raise ValueError(f"checkpoint {path} is corrupted (checksum mismatch)")
    else:  # the earlier layout: the checksum, if any, beside the file
        payload = data
        digest = path.with_name(path.name + ".sha256")
        if digest.exists() and digest.read_text().strip() != hashlib.sha256(data).hexdigest():
            raise ValueError(f"checkpoint {path} is corrupted (checksum mismatch)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files: unpickling errors of many kinds
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None


def load_verified(path: str | os.PathLike, *, fallback: bool = True) -> dict:
    """Load a checkpoint written by ``save_atomic``, refusing a bad checksum; with ``fallback``, a corrupted
    or missing checkpoint is replaced by ``<name>.prev`` (with a warning on stderr)."""
    path = Path(path)
    previous = previous_path(path)
    try:
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return _read_verified(path)
    except (ValueError, FileNotFoundError) as err:
        if not fallback or not previous.exists():
            raise
        print(f"warning: {err}; using the previous checkpoint {previous.name}", file=sys.stderr)
        return _read_verified(previous)
