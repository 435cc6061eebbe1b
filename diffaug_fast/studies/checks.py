"""Checks a study makes before it starts anything: every variant's options are valid for its command, and every run
folder already there was made with what the study declares now.

Why: a study resumes its runs by folder, so a folder made with other options (an older study file, a hand-made
run, a default that changed since) would otherwise be reused silently and its numbers reported under the wrong
name. The values a run would get are built by the same typed configs as the command line (preset, then
``--config``, then flags), then compared with the run's config.json, option by option; nothing runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from diffaug_fast.config import (NOT_IDENTITY, PRESETS, DenoiserCommand, DenoiserConfig, TrainCommand, TrainConfig,
                                 build, flat_options, read_config_file)
from diffaug_fast.config.options import add_arguments, get, given, leaves
from diffaug_fast.runs import files


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ValueError(message)


CLASSES = {"train": (TrainConfig, TrainCommand), "train-denoiser": (DenoiserConfig, DenoiserCommand)}


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog=f"diffaug-fast {command}", add_help=False)
    for cls in CLASSES[command]:
        add_arguments(parser, cls)
    return parser.parse_args(argv)


def _touched(cls, values: dict) -> set[tuple[str, ...]]:
    """The options a layer (nested sections or flat flag names, as ``config.options.apply`` reads it) sets."""
    by_path = {leaf.path: leaf for leaf in leaves(cls)}
    by_key = {leaf.key: leaf for leaf in leaves(cls)} | {
        leaf.field.metadata["alias"]: leaf for leaf in leaves(cls) if leaf.field.metadata.get("alias")}
    out = set()

    def visit(prefix, mapping):
        for name, value in mapping.items():
            path = (*prefix, name)
            if isinstance(value, dict) and any(p[:len(path)] == path and len(p) > len(path) for p in by_path):
                visit(path, value)
            elif path in by_path:
                out.add(path)
            elif not prefix and name in by_key:
                out.add(by_key[name].path)

    visit((), values)
    return out


def declared(command: str, argv: list[str]) -> dict[tuple[str, ...], object]:
    """The values ``diffaug-fast <command> <argv>`` would run with (preset, then --config, then the flags), by
    option path: every option that decides what a run computes, and the execution options (device, compile,
    cadences, loader processes) only where argv, its preset or its --config set them. A mistake is a ValueError
    naming the option."""
    args = _parse(command, argv)
    config_cls, command_cls = CLASSES[command]
    layers = []
    if command == "train":
        chosen = given(args, command_cls)
        layers.append((f"preset {chosen.get('preset', 'default')!r}", PRESETS[chosen.get("preset", "default")]))
        if chosen.get("config"):
            layers.append((f"--config {chosen['config']}", read_config_file(chosen["config"])))
    layers.append(("the study's options", given(args, config_cls)))
    config = build(config_cls, *layers)
    touched = set().union(*(_touched(config_cls, values) for _, values in layers))
    execution = [n for n in NOT_IDENTITY if not n.startswith("eval")] if command == "train" else []
    return {leaf.path: get(config, leaf.path) for leaf in leaves(config_cls)
            if leaf.path in touched or ".".join(leaf.path) not in execution}


def _resolved_by_the_run(leaf, value) -> bool:
    """auto (or an internal None) is decided by the run from its data: its config.json holds the outcome."""
    meta = leaf.field.metadata
    return value == "auto" or value is None and (meta.get("none") == "auto" or not meta.get("cli", True))


def given_paths(command: str, argv: list[str]) -> set[tuple[str, ...]]:
    """The options ``argv`` itself gives (no preset, no --config)."""
    args = _parse(command, argv)
    return {leaf.path for leaf in leaves(CLASSES[command][0]) if hasattr(args, ".".join(leaf.path))}


def flag(command: str, path: tuple[str, ...]) -> str:
    return next(leaf.flag for leaf in leaves(CLASSES[command][0]) if leaf.path == path)


def recorded(command: str, folder: Path) -> dict[tuple[str, ...], object]:
    """The run's own options from its config.json, by option path."""
    saved = files.read_json(folder / files.CONFIG)
    if not isinstance(saved, dict):
        raise ValueError(f"{folder / files.CONFIG} does not hold a config object")
    if command == "train":
        flat = flat_options(saved)
        return {leaf.path: flat[leaf.key] for leaf in leaves(TrainConfig)}
    return {leaf.path: saved[leaf.path[-1]] for leaf in leaves(DenoiserConfig) if leaf.path[-1] in saved}


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def mismatches(command: str, folder: Path, argv: list[str], extra: list[str]) -> list[str]:
    """How the run in ``folder`` differs from what ``argv`` declares (options ``extra`` sets are the caller's
    to change: not compared). Options a run resolves itself (declared auto) are not compared."""
    want = declared(command, argv)
    skip = given_paths(command, extra)
    try:
        have = recorded(command, folder)
    except ValueError as err:
        return [f"its {files.CONFIG} cannot be read ({err})"]
    by_path = {leaf.path: leaf for leaf in leaves(CLASSES[command][0])}
    out = []
    for path, value in want.items():
        if path in skip or path not in have or _resolved_by_the_run(by_path[path], value):
            continue
        if not _same(have[path], value):
            out.append(f"{flag(command, path)} is {have[path]!r} in its {files.CONFIG}, the study declares {value!r}")
    return out
