"""The package's shape: imports only point down the layers of docs/architecture.md, no import circles between
modules, nothing outside train/ and cli.py imports train/, no module over 400 lines, no private name
imported across modules."""
import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "diffaug_fast"
# lower number = lower layer; a module may import its own layer or below
LAYERS = {
    "errors": 0, "streams": 0, "devices": 0, "ops": 0,
    "diffusion": 1,
    "models": 2, "augment": 2, "data": 2,
    "config": 3,
    "runs": 4,
    "eval": 5,
    "train": 6, "studies": 6,
    "cli": 7,
}
MAX_LINES = 400


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path


def _imports(name: str, path: Path):
    """(imported module, imported names) of every import in the file, function-level ones included."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            yield base, [a.name for a in node.names]


def _layer(module: str):
    parts = module.split(".")
    if parts[0] != "diffaug_fast" or len(parts) == 1:
        return None
    return parts[1]


def _edges():
    for name, path in _modules():
        for target, names in _imports(name, path):
            if not target.startswith("diffaug_fast"):
                continue
            targets = [target] + [f"{target}.{n}" for n in names if (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).with_suffix(".py").exists()
                                  or (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).is_dir()]
            for t in targets:
                yield name, t, names


def test_every_top_level_part_has_a_layer():
    parts = {_layer(name) for name, _ in _modules()} - {None, "_C", "weights"}
    assert parts <= set(LAYERS), f"modules without a layer: {sorted(parts - set(LAYERS))}"


def test_imports_point_down():
    upward = []
    for source, target, _ in _edges():
        src, dst = _layer(source), _layer(target)
        if src is None or dst is None or dst == "_C":  # the top-level package re-exports the public API
            continue
        if LAYERS[dst] > LAYERS[src]:
            upward.append(f"{source} -> {target}")
    assert not upward, "imports pointing up:\n" + "\n".join(sorted(set(upward)))


def test_only_train_and_cli_import_train():
    bad = sorted({f"{s} -> {t}" for s, t, _ in _edges() if _layer(t) == "train" and _layer(s) not in ("train", "cli")})
    assert not bad, "\n".join(bad)


def test_no_import_circles_between_modules():
    modules = {name for name, _ in _modules()}
    graph = {name: set() for name in modules}
    for source, target, _ in _edges():
        if target in modules and target != source and not target == source.rsplit(".", 1)[0]:
            graph[source].add(target)
    # a package's __init__ re-exporting its own submodules is not a circle
    for name in modules:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


@pytest.mark.parametrize("name, path", list(_modules()), ids=[n for n, _ in _modules()])
def test_module_size(name, path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


def test_no_private_names_cross_modules():
    bad = []
    for name, path in _modules():
        for target, names in _imports(name, path):
            if not target.startswith("diffaug_fast") or target == "diffaug_fast" and names == ["_C"]:
                continue
            for n in names:
                if n.startswith("_") and n != "_C" and not n.startswith("__"):
                    bad.append(f"{name}: from {target} import {n}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker can fail: a fake ops module importing train is reported."""
    fake = tmp_path / "diffaug_fast" / "ops"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from diffaug_fast.train import loop\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "diffaug_fast")
    with pytest.raises(AssertionError, match="diffaug_fast.ops.bad -> diffaug_fast.train"):
        test_imports_point_down()
