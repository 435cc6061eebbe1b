"""Where a run's denoiser and data live, recorded so the run works from any directory and anywhere it is moved.

A run folder (and an exported classifier's ``.json``) records

* ``denoiser.json``: the denoiser as typed, the sha256 of its weights (a diffusers folder: of its weight files),
  its absolute path, its path relative to the run folder and its ``--denoiser-flags``; shipped names
  (``fmnist``, ``fmnist-ve``) stay names;
* ``data.json``: the data source as typed, its absolute path and its path relative to the run folder
  (``fmnist`` stays a name; ``cifar10:DIR`` keeps its prefix).

Reading a run resolves both: the path relative to the run folder first, then the absolute one (a denoiser's
hash is verified; a changed or vanished file is a one-line error saying where it looked). Whether two spellings
name the same denoiser is decided by content (:func:`denoiser_key`), not by the string typed.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from diffaug_fast.errors import DiffAugError
from diffaug_fast.runs import files
from diffaug_fast.runs.weights import MODELS

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_PREFIX = re.compile(r"^(cifar\d+:)(.*)$")
_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: each file is read once per process


def _file_hash(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a weights file; of a folder (diffusers): of its weight files' relative names and hashes."""
    path = Path(path)
    if path.is_file():
        return _file_hash(path)
    weights = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise DiffAugError(f"{path} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    digest = hashlib.sha256()
    for p in weights:
        digest.update(f"{p.relative_to(path).as_posix()}:{_file_hash(p)}\n".encode())
    return digest.hexdigest()


def denoiser_key(source: str) -> str:
    """What a denoiser is, independent of how it was spelled: ``shipped:<file>`` or ``sha256:<hash>`` (``path:``
    the string itself when nothing is there)."""
    name = str(source)
    if name in MODELS:
        return f"shipped:{MODELS[name]}"
    return f"sha256:{content_hash(name)}" if Path(name).exists() else f"path:{name}"


def same_denoiser(a: str, b: str) -> bool:
    return str(a) == str(b) or denoiser_key(a) == denoiser_key(b)


def _relative(path: Path, base: Path) -> str:
    return os.path.relpath(path.resolve(), Path(base).resolve())


def denoiser_record(source: str, base: str | os.PathLike, flags: str | None = None) -> dict:
    """The record of a denoiser used by a run whose folder (or export's folder) is ``base``."""
    name = str(source)
    if name in MODELS:
        return {"name": name}
    path = Path(name)
    return {"source": name, "sha256": content_hash(path), "absolute": str(path.resolve()),
            "relative": _relative(path, base), "flags": flags}


def data_record(source: str, base: str | os.PathLike) -> dict:
    match = _PREFIX.match(str(source))
    prefix, rest = (match.group(1), match.group(2)) if match else ("", str(source))
    if source == "fmnist" or not Path(rest).exists():
        return {"name": str(source)}
    return {"source": str(source), "prefix": prefix, "absolute": str(Path(rest).resolve()),
            "relative": _relative(Path(rest), base)}


def write_records(run_dir: str | os.PathLike, data: str, denoiser: str | None, flags: str | None = None) -> None:
    """``data.json`` always, ``denoiser.json`` when the run used its denoiser."""
    run_dir = Path(run_dir)
    files.write_json(run_dir / files.DATA_RECORD, data_record(data, run_dir))
    if denoiser is not None:
        files.write_json(run_dir / files.DENOISER_RECORD, denoiser_record(denoiser, run_dir, flags))


def _candidates(record: dict, base: Path) -> list[Path]:
    out = [Path(os.path.normpath(base / record["relative"])), Path(record["absolute"])]
    return [p for k, p in enumerate(out) if p not in out[:k]]


def resolve_denoiser(record: dict, base: str | os.PathLike, what: str) -> str:
    """The path (or shipped name) of a recorded denoiser: relative to ``base``, else absolute, hash verified."""
    if "name" in record:
        return record["name"]
    base, looked = Path(base), []
    for path in _candidates(record, base):
        if not path.exists():
            looked.append(f"{path} (missing)")
        elif content_hash(path) != record["sha256"]:
            looked.append(f"{path} (changed: sha256 {content_hash(path)[:12]}…)")
        else:
            return str(path.resolve())
    raise DiffAugError(f"{what} was trained with the denoiser {record['source']!r} (sha256 {record['sha256'][:12]}…), "
                       f"which is gone: looked at {' and '.join(looked)}; put that file back, or retrain")


def resolve_data(record: dict | None, typed: str, base: str | os.PathLike, what: str) -> str:
    """The data source of a run: recorded relative to ``base``, else absolute, else as typed."""
    if record is None or "name" in record:
        return typed
    for path in _candidates(record, Path(base)):
        if path.exists():
            return record["prefix"] + str(path.resolve())
    if Path(typed.removeprefix(record["prefix"])).exists():
        return typed
    raise DiffAugError(f"{what} was trained on {record['source']!r}, which is not at {Path(base) / record['relative']} "
                       f"(relative to the run) nor at {record['absolute']}; put the images back there")


def same_data(a: str, b: str) -> bool:
    """Two spellings of a data source name the same data (same ``cifar…:`` prefix, same resolved path)."""
    if a == b:
        return True
    norm = [(m.group(1), Path(m.group(2)).resolve()) if (m := _PREFIX.match(s)) else ("", Path(s).resolve())
            for s in (a, b)]
    return norm[0] == norm[1]


def read_records(base: str | os.PathLike) -> tuple[dict | None, dict | None]:
    """(denoiser record, data record) of a run folder; None where it has none (runs of earlier versions)."""
    base = Path(base)
    return files.read_json(base / files.DENOISER_RECORD), files.read_json(base / files.DATA_RECORD)


def resolve_config_values(values: dict, base: str | os.PathLike, records: tuple, what: str) -> dict:
    """A saved config (nested sections or the flat layout of earlier versions) with its data source and denoiser
    replaced by where they are now."""
    denoiser, data = records
    nested = isinstance(values.get("data"), dict)
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    data_sec, den_sec = (values["data"], values.setdefault("diffaug", {})) if nested else (values, values)
    key = "source" if nested else "data"
    if key in data_sec:
        data_sec[key] = resolve_data(data, str(data_sec[key]), base, what)
    if denoiser is not None:
        den_sec["denoiser"] = resolve_denoiser(denoiser, base, what)
    return values


def denoiser_data(source: str) -> str | None:
    """The data a denoiser was trained on, where it is now: ``fmnist`` for the shipped Fashion-MNIST ones, the
    record in a ``train-denoiser`` export's ``.json``; None when unknown (a released checkpoint) or gone."""
    name = str(source)
    if name in MODELS:
        return "fmnist"
    meta = files.read_json(Path(name).with_suffix(".json")) if Path(name).is_file() else None
    record = meta.get("data") if isinstance(meta, dict) else None
    if not isinstance(record, dict):
        return None
    try:
        return resolve_data(record, record.get("source", record.get("name", "")), Path(name).parent, name)
    except DiffAugError:
        return None
