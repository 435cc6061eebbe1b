"""Atomic, checksummed training checkpoints: a crash mid-write never replaces a good checkpoint."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch


def save_atomic(state: dict, path: str | os.PathLike) -> None:
    """torch.save to a temporary file, fsync, then rename over `path` (with a .sha256 beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    digest = path.with_name(path.name + ".sha256")
    digest_tmp = digest.with_name(digest.name + ".tmp")
    digest_tmp.write_text(hashlib.sha256(data).hexdigest())
    os.replace(tmp, path)
    os.replace(digest_tmp, digest)


def load_verified(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by save_atomic, refusing one whose checksum does not match."""
    path = Path(path)
    data = path.read_bytes()
    digest = path.with_name(path.name + ".sha256")
    if digest.exists() and digest.read_text().strip() != hashlib.sha256(data).hexdigest():
        raise ValueError(f"checkpoint {path} is corrupted (checksum mismatch)")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
