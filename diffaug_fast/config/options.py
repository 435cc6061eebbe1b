"""Typed options, written once: a dataclass field carries its default, type, one-line help and check, and
from it come the command-line flag, the ``--help`` line with the default, the validation message, and the
config-file format.

Why our own ~200 lines and not tyro / jsonargparse / simple-parsing: the flags users and docs already know
(``--ema``, ``--data``, ``--eval-limit all``) stay exactly as they are, sections flatten to one flat flag
namespace, presets and ``--config`` files merge by the same rules, and the package gains no dependency.

Rules:
* a flag is ``--`` + the field's name with ``-`` for ``_`` unless the field names another (``flag=``);
* ``bool`` fields get ``--x`` / ``--no-x``; ``Literal`` fields get their choices; ``list[int]`` /
  ``list[float]`` / ``list[str]`` fields read comma-separated values; ``X | None`` fields accept the word
  given as ``none=`` (e.g. ``--eval-limit all``);
* every float must be finite; ``check=`` adds a range (``positive``, ``nonnegative``, ``unit``, ...);
* layering: the dataclass defaults < a preset < a ``--config`` file < the flags given on the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

# named range checks: (predicate, what the message says was expected)
CHECKS = {
    "positive": (lambda v: v > 0, "> 0"),
    "nonnegative": (lambda v: v >= 0, ">= 0"),
    "unit": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "open_unit": (lambda v: 0 < v < 1, "in (0, 1)"),
    "fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "loss_weight": (lambda v: 0 < v <= 100, "> 0 and <= 100"),
}


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, check: str | None = None,
           none: str | None = None, factory=None, cli: bool = True, metavar: str | None = None,
           alias: str | None = None, repeat: bool = False):
    """A config field with its help line, flag name, range check, the word that stands for None, and the
    flat name earlier config files used for it when that differs from the flag (``alias``)."""
    if check is not None and check not in CHECKS:
        raise KeyError(f"unknown check {check!r}")
    meta = {"help": help, "flag": flag, "check": check, "none": none, "cli": cli, "metavar": metavar,
            "alias": alias, "repeat": repeat}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls):
    """A field holding a sub-config (a section of options)."""
    return dataclasses.field(default_factory=cls, metadata={"section": True})


class Leaf(typing.NamedTuple):
    path: tuple[str, ...]  # attribute path from the root config
    field: dataclasses.Field
    hint: Any

    @property
    def flag(self) -> str:
        return self.field.metadata.get("flag") or "--" + self.path[-1].replace("_", "-")

    @property
    def key(self) -> str:  # the flat name in presets and older config files
        return self.flag[2:].replace("-", "_")


def leaves(cls) -> list[Leaf]:
    """Every option of a config class, sections flattened, in declaration order."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            out += [Leaf((f.name, *leaf.path), leaf.field, leaf.hint) for leaf in leaves(hints[f.name])]
        else:
            out.append(Leaf((f.name,), f, hints[f.name]))
    return out


def _split_optional(hint):
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _base(hint):
    return _split_optional(hint)[0]


def _describe(hint) -> str:
    base = _base(hint)
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(base)))
    if typing.get_origin(base) is list:
        return f"comma-separated {typing.get_args(base)[0].__name__} values"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(base, str(base))


def _convert_text(leaf: Leaf, text: str):
    """A command-line or config-file string turned into the field's type; ValueError names the flag."""
    base, optional = _split_optional(leaf.hint)
    none_word = leaf.field.metadata.get("none")
    if optional and none_word and text == none_word:
        return None
    try:
        if typing.get_origin(base) is Literal:
            kind = type(typing.get_args(base)[0])
            if optional and none_word and kind(text) not in typing.get_args(base):  # argparse has no choices here
                raise ValueError
            return kind(text)
        if typing.get_origin(base) is list:
            item = typing.get_args(base)[0]
            return [item(v.strip()) for v in text.split(",") if v.strip()]
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return base(text)
    except ValueError:
        extra = f" or '{none_word}'" if optional and none_word else ""
        raise ValueError(f"argument {leaf.flag}: expected {_describe(leaf.hint)}{extra}, got {text!r}") from None


def check_value(leaf: Leaf, value) -> None:
    """The field's type, choices, finiteness and range; ValueError naming the flag."""
    base, optional = _split_optional(leaf.hint)
    flag = leaf.flag
    if value is None:
        if optional:
            return
        raise ValueError(f"argument {flag} must be {_describe(leaf.hint)}, got None")
    if typing.get_origin(base) is Literal:
        if value not in typing.get_args(base):
            raise ValueError(f"argument {flag} is {value!r}; expected {_describe(leaf.hint)}")
        return
    items = value if typing.get_origin(base) is list else [value]
    item_type = typing.get_args(base)[0] if typing.get_origin(base) is list else base
    if typing.get_origin(base) is list and not isinstance(value, (list, tuple)):
        raise ValueError(f"argument {flag} must be {_describe(leaf.hint)}, got {value!r}")
    check = leaf.field.metadata.get("check")
    for v in items:
        ok_type = isinstance(v, item_type) and not (item_type is int and isinstance(v, bool))
        if item_type is float and isinstance(v, int) and not isinstance(v, bool):
            ok_type = True
        if not ok_type:
            raise ValueError(f"argument {flag} must be {_describe(leaf.hint)}, got {value!r}")
        if item_type is float and not math.isfinite(v):
            raise ValueError(f"argument {flag} must be a finite number, got {v}")
        if check is not None and not CHECKS[check][0](v):
            word = leaf.field.metadata.get("none")
            raise ValueError(f"argument {flag} must be {CHECKS[check][1]}{f' or {word!r}' if word else ''}, got {v!r}")


def get(config, path: tuple[str, ...]):
    for name in path:
        config = getattr(config, name)
    return config


def _set(config, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        config = getattr(config, name)
    setattr(config, path[-1], value)


def validate_options(config) -> None:
    """Check every field of ``config`` (types, choices, finiteness, ranges)."""
    for leaf in leaves(type(config)):
        check_value(leaf, get(config, leaf.path))


def to_dict(config) -> dict:
    """Nested plain dict (sections as sub-dicts): what config.json holds."""
    return dataclasses.asdict(config)


def apply(config, values: dict, *, source: str) -> None:
    """Set options from a nested dict (sections as sub-dicts) or a flat one (flag names, as presets and
    earlier config files have them). Unknown names raise a ValueError naming ``source``."""
    by_key = {leaf.key: leaf for leaf in leaves(type(config))}
    by_key.update({leaf.field.metadata["alias"]: leaf for leaf in leaves(type(config))
                   if leaf.field.metadata.get("alias")})
    by_path = {leaf.path: leaf for leaf in leaves(type(config))}
    unknown = []

    def visit(prefix: tuple[str, ...], mapping: dict):
        for name, value in mapping.items():
            path = (*prefix, name)
            if isinstance(value, dict) and any(p[:len(path)] == path and len(p) > len(path) for p in by_path):
                visit(path, value)
            elif path in by_path:
                _set(config, path, _coerce(by_path[path], value))
            elif not prefix and name in by_key:
                _set(config, by_key[name].path, _coerce(by_key[name], value))
            else:
                unknown.append(".".join(path))

    visit((), values)
    if unknown:
        raise ValueError(f"{source}: unknown options {', '.join(sorted(unknown))}")


def _coerce(leaf: Leaf, value):
    if isinstance(value, str) and _base(leaf.hint) is not str:
        return _convert_text(leaf, value)
    if isinstance(value, tuple):
        return list(value)
    return value


def read_config_file(path: str | Path) -> dict:
    """A JSON config file (a run's config.json, or one written by hand), as a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"argument --config: {path} is not a file")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"argument --config: {path} is not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"argument --config: {path} must hold a JSON object")
    return values


def add_arguments(parser: argparse.ArgumentParser, cls, *, titles: dict | None = None, defaults=None,
                  origin: str = "") -> None:
    """One flag per option of ``cls`` (dest = the dotted path, default left out so that only given flags
    override presets and config files); help shows the value a run without the flag gets: ``defaults`` (e.g. the
    default preset applied; else ``cls()``), with ``origin`` (e.g. "--preset default") beside a value it set."""
    bare = cls()
    defaults = bare if defaults is None else defaults
    groups: dict[str, Any] = {}
    for leaf in leaves(cls):
        if not leaf.field.metadata.get("cli", True):
            continue
        group = parser
        if len(leaf.path) > 1:
            name = leaf.path[0]
            if name not in groups:
                groups[name] = parser.add_argument_group((titles or {}).get(name, name))
            group = groups[name]
        default = get(defaults, leaf.path)
        base, optional = _split_optional(leaf.hint)
        none_word = leaf.field.metadata.get("none")
        shown = (none_word or "none") if default is None else (
            ",".join(map(str, default)) if isinstance(default, list) else default)
        origin_note = f", from {origin}" if origin and default != get(bare, leaf.path) else ""
        help_text = f"{leaf.field.metadata.get('help', '')} (default: {shown}{origin_note})".strip().replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": ".".join(leaf.path), "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            group.add_argument(leaf.flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(base) is Literal and optional and none_word:  # the converter checks: "auto" is None
            kwargs["metavar"] = "{" + ",".join(map(str, (*typing.get_args(base), none_word))) + "}"
        elif typing.get_origin(base) is Literal:
            kwargs["choices"] = list(typing.get_args(base))
        kwargs["type"] = _text_converter(leaf)
        if leaf.field.metadata.get("repeat"):  # --flag a --flag b,c -> [a, b, c]
            kwargs["action"] = _Extend
        kwargs["metavar"] = leaf.field.metadata.get("metavar") or kwargs.get("metavar") or (
            None if "choices" in kwargs else leaf.path[-1].upper())
        group.add_argument(leaf.flag, **kwargs)


class _Extend(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(getattr(namespace, self.dest, None) or []) + list(values))


def _text_converter(leaf: Leaf):
    def convert(text: str):
        try:
            return _convert_text(leaf, text)
        except ValueError as err:  # argparse shows ArgumentTypeError's message as is
            raise argparse.ArgumentTypeError(str(err).split(": ", 1)[-1]) from None
    convert.__name__ = leaf.path[-1]
    return convert


def given(args: argparse.Namespace, cls) -> dict:
    """The options given on the command line, as a nested dict."""
    out: dict = {}
    for leaf in leaves(cls):
        dest = ".".join(leaf.path)
        if hasattr(args, dest):
            node = out
            for name in leaf.path[:-1]:
                node = node.setdefault(name, {})
            node[leaf.path[-1]] = getattr(args, dest)
    return out


def build(cls, *layers: tuple[str, dict | None]):
    """``cls()`` with each (source name, values) layer applied in turn, then validated field by field and
    by the class's own ``validate()`` when it has one."""
    config = cls()
    for source, values in layers:
        if values:
            apply(config, values, source=source)
    validate_options(config)
    if hasattr(config, "validate"):
        config.validate()
    return config
