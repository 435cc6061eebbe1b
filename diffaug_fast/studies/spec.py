"""A declared study (``experiments/<name>.toml``) read into frozen dataclasses, every mistake caught before any run.

Why so strict: a study is written before its runs and decides what they may claim; a misspelled key, a
comparison naming a variant nobody declared or a "keeps" without its margin would otherwise surface hours later as
a missing number or a verdict about nothing. Every error is a ``ValueError`` naming the file, the table / key and
what was expected. Plain data in, plain data out: no run folder, no torch.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

COMMANDS = ("train", "train-denoiser")
DIRECTIONS = ("greater", "less", "keeps")
GOALS = ("highest", "lowest")
RUNNER_FLAGS = ("--out", "--seed", "--resume", "--evaluate-only")  # the runner sets these for each run
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # names become folder names
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class Evaluation:
    """A command run on each finished run (of ``variants``) after training; done when ``<run>/<name>/<output>``
    exists. An optional one (a GPU job, say) runs only when ``study run --optional`` names it."""
    name: str
    command: str
    args: tuple[str, ...]
    output: str
    variants: tuple[str, ...]
    needs: tuple[str, ...]  # the other variants its {run:X} placeholders name
    optional: bool = False

    @property
    def path(self) -> str:
        return f"{self.name}/{self.output}"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    file: str
    key: str
    images: int | None
    percent: bool

    @property
    def scale(self) -> float:
        return 100.0 if self.percent else 1.0


@dataclass(frozen=True)
class Comparison:
    claim: str
    a: str
    b: str
    metric: str
    direction: str
    margin: float | None
    sign: int  # -1: the difference is b - a (a lower-is-better metric)
    metric_b: str | None = None  # the metric read from b; None: ``metric`` (set when a claim compares two metrics)

    @property
    def b_metric(self) -> str:
        """The metric read from b's runs."""
        return self.metric if self.metric_b is None else self.metric_b

    @property
    def same_runs(self) -> bool:
        """Two metrics of the same runs (a is b): paired by seed over the same images, never independent."""
        return self.a == self.b


@dataclass(frozen=True)
class Selection:
    metric: str
    among: tuple[str, ...]
    rule: str
    tolerance: float
    goal: str


@dataclass(frozen=True)
class Study:
    path: str
    name: str
    title: str
    question: str
    seeds: tuple[int, ...]
    command: str
    options: tuple[str, ...]
    budget: str
    notes: tuple[str, ...]
    listed: bool
    headline: bool
    variants: tuple[Variant, ...]
    evaluations: tuple[Evaluation, ...]
    metrics: tuple[Metric, ...]
    comparisons: tuple[Comparison, ...]
    selection: Selection | None

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)


class _Table:
    """One TOML table with its place in the file, so every complaint says where."""

    def __init__(self, path: Path, where: str, values, allowed: tuple[str, ...]):
        self.path, self.where = path, where
        if not isinstance(values, dict):
            self.fail(f"must be a table, got {type(values).__name__}")
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            self.fail(f"unknown key {', '.join(map(repr, unknown))}; expected {', '.join(allowed)}")
        self.values = values

    def fail(self, message: str, key: str | None = None):
        at = f"[{self.where}]" + (f" {key}" if key else "")
        raise ValueError(f"{self.path}: {at}: {message}")

    def get(self, key: str, kind, default=..., *, what: str | None = None):
        if key not in self.values:
            if default is ...:
                self.fail(f"missing; expected {what or kind.__name__}", key)
            return default
        value = self.values[key]
        if not isinstance(value, kind) or (kind in (int, (int, float)) and isinstance(value, bool)) or \
                (isinstance(value, float) and not math.isfinite(value)):
            self.fail(f"expected {what or kind.__name__}, got {value!r}", key)
        return value

    def text(self, key: str, default=...) -> str:
        value = self.get(key, str, default, what="a string")
        if value is not None and not value.strip():
            self.fail("expected a non-empty string", key)
        return value

    def strings(self, key: str, default=()) -> tuple[str, ...]:
        value = self.get(key, list, list(default), what="a list of strings")
        if not all(isinstance(v, str) for v in value):
            self.fail(f"expected a list of strings, got {value!r}", key)
        return tuple(value)

    def names(self, key: str, known: tuple[str, ...], default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """A list of declared variant names (``default`` None: the key is required)."""
        if key not in self.values and default is None:
            self.fail(f"missing; expected a list of variants among {', '.join(known)}", key)
        value = self.strings(key, default or ())
        for name in value:
            if name not in known:
                self.fail(f"names variant {name!r}, which the study does not declare; declared: {', '.join(known)}",
                          key)
        if len(set(value)) != len(value):
            self.fail(f"names a variant twice: {list(value)}", key)
        return value


def _runner_flags(table: _Table, key: str, options: tuple[str, ...]) -> None:
    for option in options:
        if option.split("=", 1)[0] in RUNNER_FLAGS:
            table.fail(f"{option.split('=', 1)[0]} is set by the runner for each run; leave it out", key)


def _name(table: _Table, key: str, value: str) -> str:
    if not _NAME.match(value):
        table.fail(f"{value!r} is not a usable name (letters, digits, '_', '-', '.'; it becomes a folder name)", key)
    return value


def _study_table(path: Path, values) -> dict:
    t = _Table(path, "study", values, ("name", "title", "question", "seeds", "command", "options", "budget",
                                       "notes", "listed", "headline"))
    name = _name(t, "name", t.text("name"))
    if name != path.stem:
        t.fail(f"is {name!r} but the file is {path.name}; the name must equal the file stem {path.stem!r}", "name")
    seeds = t.get("seeds", list, what="a non-empty list of seeds (integers >= 0)")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        t.fail(f"expected a non-empty list of seeds (integers >= 0), got {seeds!r}", "seeds")
    if len(set(seeds)) != len(seeds):
        t.fail(f"lists a seed twice: {seeds}", "seeds")
    command = t.get("command", str, "train")
    if command not in COMMANDS:
        t.fail(f"is {command!r}; expected one of {', '.join(COMMANDS)}", "command")
    options = t.strings("options")
    _runner_flags(t, "options", options)
    return dict(name=name, title=t.text("title"), question=t.text("question"), seeds=tuple(seeds), command=command,
                options=options, budget=t.text("budget"), notes=t.strings("notes"),
                listed=t.get("listed", bool, True, what="true or false"),
                headline=t.get("headline", bool, False, what="true or false"))


def _variants(path: Path, values) -> tuple[Variant, ...]:
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{path}: [variants]: expected at least one [variants.<name>] table")
    out = []
    for name, table in values.items():
        t = _Table(path, f"variants.{name}", table, ("label", "options"))
        _name(t, None, name)
        options = t.strings("options")
        _runner_flags(t, "options", options)
        out.append(Variant(name, t.text("label", name), options))
    return tuple(out)


def _evaluation(path: Path, i: int, table, variants: tuple[str, ...]) -> Evaluation:
    t = _Table(path, f"evaluations.{i}", table, ("name", "command", "args", "output", "variants", "optional"))
    name = _name(t, "name", t.text("name"))
    command = t.text("command")
    if " " in command.strip():
        t.fail(f"is {command!r}; expected one diffaug-fast command (e.g. eval); its flags go in args", "command")
    args = t.strings("args")
    needs = []
    for arg in args:
        for field in _PLACEHOLDER.findall(arg):
            if field in ("run", "out", "seed"):
                continue
            if not field.startswith("run:"):
                t.fail(f"placeholder {{{field}}} in {arg!r} is unknown; expected {{run}}, {{out}}, {{seed}} or "
                       "{run:<variant>}", "args")
            other = field[4:]
            if other not in variants:
                t.fail(f"placeholder {{{field}}} names variant {other!r}, which the study does not declare; "
                       f"declared: {', '.join(variants)}", "args")
            needs.append(other)
    output = t.text("output")
    if Path(output).is_absolute() or ".." in Path(output).parts:
        t.fail(f"is {output!r}; expected a file name inside the evaluation's folder", "output")
    chosen = t.names("variants", variants, variants)
    return Evaluation(name, command.strip(), args, output, chosen, tuple(dict.fromkeys(needs)),
                      t.get("optional", bool, False, what="true or false"))


def _metric(path: Path, name: str, table) -> Metric:
    t = _Table(path, f"metrics.{name}", table, ("label", "file", "key", "images", "percent"))
    _name(t, None, name)
    file = t.text("file", "metrics.json")
    if Path(file).is_absolute() or ".." in Path(file).parts:
        t.fail(f"is {file!r}; expected a path relative to the run folder", "file")
    images = t.get("images", int, None, what="a number of images (an integer > 0)")
    if images is not None and images <= 0:
        t.fail(f"expected a number of images (an integer > 0), got {images}", "images")
    return Metric(name, t.text("label", name), file, t.text("key"), images,
                  t.get("percent", bool, True, what="true or false"))


def _comparison(path: Path, i: int, table, variants: tuple[str, ...], metrics: dict[str, Metric]) -> Comparison:
    t = _Table(path, f"comparisons.{i}", table, ("claim", "a", "b", "metric", "metric_b", "direction", "margin",
                                                    "sign"))
    a, b = t.text("a"), t.text("b")
    for key, v in (("a", a), ("b", b)):
        if v not in variants:
            t.fail(f"names variant {v!r}, which the study does not declare; declared: {', '.join(variants)}", key)
    declared = ', '.join(metrics) or '(none)'
    metric = t.text("metric")
    if metric not in metrics:
        t.fail(f"names metric {metric!r}, which the study does not declare; declared: {declared}", "metric")
    metric_b = t.text("metric_b", metric)
    if metric_b not in metrics:
        t.fail(f"names metric {metric_b!r}, which the study does not declare; declared: {declared}", "metric_b")
    if a == b and "metric_b" not in t.values:
        t.fail(f"a and b are both {a!r}; a comparison needs two variants, or two metrics of the same runs "
               "(metric_b: the metric read from b)", "b")
    if a == b and metric_b == metric:
        t.fail(f"is {metric_b!r}, the same as metric, and a and b are both {a!r}: that compares each run with "
               "itself; name another metric, or another variant in b", "metric_b")
    if metrics[metric_b].percent != metrics[metric].percent:
        t.fail(f"metric {metric_b!r} has percent = {str(metrics[metric_b].percent).lower()} but metric {metric!r} "
               f"has percent = {str(metrics[metric].percent).lower()}; a difference needs both in one unit",
               "metric_b")
    direction = t.text("direction")
    if direction not in DIRECTIONS:
        t.fail(f"is {direction!r}; expected one of {', '.join(DIRECTIONS)}", "direction")
    margin = t.get("margin", (int, float), None, what="a number of points > 0")
    if direction == "keeps" and (margin is None or not margin > 0):
        t.fail(f"direction keeps needs a margin > 0 (points a claims it stays within b), got {margin!r}", "margin")
    if direction != "keeps" and margin is not None:
        t.fail(f"a margin belongs to direction keeps only; this comparison is {direction!r}", "margin")
    sign = t.get("sign", int, 1, what="1 or -1")
    if sign not in (1, -1):
        t.fail(f"is {sign}; expected 1 or -1 (-1: a lower-is-better metric, the difference is b - a)", "sign")
    return Comparison(t.text("claim"), a, b, metric, direction, None if margin is None else float(margin), sign,
                      metric_b if "metric_b" in t.values else None)


def _selection(path: Path, table, variants: tuple[str, ...], metrics: dict[str, Metric]) -> Selection:
    t = _Table(path, "selection", table, ("metric", "among", "rule", "tolerance", "goal"))
    metric = t.text("metric")
    if metric not in metrics:
        t.fail(f"names metric {metric!r}, which the study does not declare; declared: {', '.join(metrics) or '(none)'}",
               "metric")
    m = metrics[metric]
    if "val" not in m.name and "val" not in m.key:
        t.fail(f"metric {metric!r} (key {m.key!r}) is not a validation metric; choices are made on validation, "
               "never on test", "metric")
    among = t.names("among", variants)
    if len(among) < 2:
        t.fail(f"expected at least two variants to choose among, got {list(among)}", "among")
    tolerance = t.get("tolerance", (int, float), 0.0, what="a number of points >= 0")
    if tolerance < 0:
        t.fail(f"expected a number of points >= 0, got {tolerance}", "tolerance")
    goal = t.get("goal", str, "highest")
    if goal not in GOALS:
        t.fail(f"is {goal!r}; expected one of {', '.join(GOALS)}", "goal")
    return Selection(metric, among, t.text("rule"), float(tolerance), goal)


def parse_study(path: str | Path, data: dict) -> Study:
    """A ``Study`` from the TOML's data (already parsed); ``path`` names it in messages and must end in
    ``<name>.toml``."""
    path = Path(path)
    top = _Table(path, "(top level)", data, ("study", "variants", "evaluations", "metrics", "comparisons",
                                              "selection"))
    if "study" not in data:
        top.fail("missing the [study] table")
    study = _study_table(path, data["study"])
    variants = _variants(path, data.get("variants"))
    names = tuple(v.name for v in variants)
    evaluations = tuple(_evaluation(path, i, e, names) for i, e in enumerate(top.get("evaluations", list, [],
                                                                                      what="an array of tables")))
    seen = [e.name for e in evaluations]
    if len(set(seen)) != len(seen):
        raise ValueError(f"{path}: [[evaluations]] name: two evaluations share a name ({seen}); each gets its own "
                         "folder")
    raw_metrics = top.get("metrics", dict, {}, what="a table of [metrics.<name>] tables")
    metrics = tuple(_metric(path, name, table) for name, table in raw_metrics.items())
    by_name = {m.name: m for m in metrics}
    comparisons = tuple(_comparison(path, i, c, names, by_name)
                        for i, c in enumerate(top.get("comparisons", list, [], what="an array of tables")))
    selection = _selection(path, data["selection"], names, by_name) if "selection" in data else None
    return Study(path=str(path), **study, variants=variants, evaluations=evaluations, metrics=metrics,
                 comparisons=comparisons, selection=selection)


def load_study(path: str | Path) -> Study:
    """Read and check ``experiments/<name>.toml``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {path} does not exist" if not path.exists() else
                                f"study file {path} is not a file")
    if path.suffix != ".toml":
        raise ValueError(f"study file {path}: expected a .toml file (experiments/<name>.toml)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"study file {path} is not valid TOML ({err})") from None
    return parse_study(path, data)
