"""A study's numbers gathered from its run folders into ``docs/results/<name>/runs.json``: the stored evidence.

Why a file of its own: run folders are not in git and live on the machine that made them; runs.json is what the
report is computed from, so a report can be regenerated anywhere. Stored runs whose folders are absent here are
kept (they are the evidence); a run present in both is taken from its folder, which is newer or equal.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path

from diffaug_fast.runs import files
from diffaug_fast.studies.spec import Metric, Study

RUNS_FILE = "runs.json"
MARKERS = {"train": files.METRICS, "train-denoiser": files.REPORT}  # the file a finished run writes last


def run_folder(runs_root: str | Path, study: Study, variant: str, seed: int) -> Path:
    return Path(runs_root) / study.name / variant / f"seed{seed}"


def finished(study: Study, folder: Path) -> bool:
    return (folder / MARKERS[study.command]).is_file()


def machine() -> str:
    """This machine in a few words: cores, CPU model, the vector extension that decides bf16 speed; a GPU if any."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        if found := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = re.sub(r"\s+", " ", found.group(1)).strip()
        if found := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            flags = set(found.group(1).split())
    except OSError:
        pass
    ext = next((f for f in ("avx512_bf16", "avx512f", "avx2") if f in flags), None)
    words = f"{os.cpu_count() or '?'}-core {model}" + (f" ({ext})" if ext else "")
    try:
        import torch

        if torch.cuda.is_available():
            words = f"{torch.cuda.get_device_name(0)}, {words}"
    except Exception:  # torch missing or no driver: the CPU is the machine
        pass
    return words


def commit() -> str | None:
    """The package checkout's short commit (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[2],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def lookup(value, key: str):
    """``key``'s dotted path into a JSON value: dict keys (a key holding dots, like "0.25", matches whole: the
    longest key that fits wins) and list indices. KeyError when the path leads nowhere."""
    parts = key.split(".")
    while parts:
        if isinstance(value, list):
            try:
                value, parts = value[int(parts[0])], parts[1:]
            except (ValueError, IndexError):
                raise KeyError(key) from None
            continue
        if not isinstance(value, dict):
            raise KeyError(key)
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in value:
                value, parts = value[".".join(parts[:n])], parts[n:]
                break
        else:
            raise KeyError(key)
    return value


def read_metric(folder: Path, metric: Metric) -> float | None:
    """The metric's number in ``folder``; None when its file or key is absent (a run made before the metric
    existed simply lacks it). A value that is not a number is an error naming the file and key."""
    path = folder / metric.file
    data = files.read_json(path)
    if data is None:
        return None
    try:
        value = lookup(data, metric.key)
    except KeyError:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"metric {metric.name}: {path} holds {value!r} at {metric.key!r}; expected a number")
    return float(value)


def _facts(study: Study, folder: Path) -> dict:
    config = files.read_json(folder / files.CONFIG, {}) or {}
    metrics = files.read_json(folder / files.METRICS, {}) if study.command == "train" else {}
    recorded = files.read_json(folder / files.STUDY_RUN, {}) or {}  # what the runner wrote when it made the run
    data = config.get("data") if isinstance(config.get("data"), dict) else config
    val_size = data.get("val_size")
    facts = {"folder": folder.as_posix(), "machine": recorded.get("machine") or machine(),
             "commit": recorded.get("commit") or commit(), "seconds": (metrics or {}).get("train_seconds_this_call")}
    if study.command == "train":
        facts.update(val_size=val_size, predates_split=not val_size)
    facts["source"] = "the run folder" + ("" if recorded else " (machine and commit: those of the collection)")
    return facts


def collect_folder(study: Study, folder: Path, variant: str, seed: int) -> dict:
    values = {m.name: read_metric(folder, m) for m in study.metrics}
    return {"variant": variant, "seed": seed, "metrics": {k: v for k, v in values.items() if v is not None},
            "facts": _facts(study, folder)}


def read_runs(path: str | Path) -> list[dict]:
    data = files.read_json(path, {"runs": []})
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path}: expected {{\"study\": ..., \"runs\": [...]}}")
    return data["runs"]


def collect(study: Study, runs_root: str | Path = "runs/studies",
            results_root: str | Path = "docs/results") -> Path | None:
    """Merge every finished run folder of ``study`` into ``<results_root>/<name>/runs.json``; returns its path
    (None, and nothing written, when there is neither a runs.json nor a finished run folder)."""
    path = Path(results_root) / study.name / RUNS_FILE
    stored = {(r["variant"], r["seed"]): r for r in read_runs(path)}
    if not path.is_file() and not any(finished(study, run_folder(runs_root, study, v, s))
                                      for v in study.variant_names for s in study.seeds):
        return None
    for variant in study.variant_names:
        for seed in study.seeds:
            folder = run_folder(runs_root, study, variant, seed)
            if finished(study, folder):
                stored[(variant, seed)] = collect_folder(study, folder, variant, seed)
    order = {name: i for i, name in enumerate(study.variant_names)}
    runs = sorted(stored.values(), key=lambda r: (order.get(r["variant"], len(order)), str(r["variant"]), r["seed"]))
    files.write_text_atomic(path, json.dumps({"study": study.name, "runs": runs}, indent=2) + "\n")
    return path
