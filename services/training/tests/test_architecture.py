"""The one-way data flow, checked from the code's own imports (docs/ARCHITECTURE.md).

Every module of the package belongs to one layer; a module may import its own package, its layer and
lower layers only (lazy imports inside functions count too), and the import graph — of modules and of
packages — has no cycles.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import heimdall

ROOT = Path(heimdall.__file__).parent

#: Bottom to top. A package not listed here fails the test: place a new room deliberately.
LAYERS: list[tuple[str, ...]] = [
    (
        "heimdall.errors",
        "heimdall.settings",
        "heimdall.geo",
        "heimdall.stations",
        "heimdall.atomic",
        "heimdall.detection",
        "heimdall.bands",
    ),
    ("heimdall.features", "heimdall.loss", "heimdall.simulate"),
    ("heimdall.model", "heimdall.radiomap", "heimdall.storage"),
    ("heimdall.services", "heimdall.ingest", "heimdall.data"),
    ("heimdall.inference",),
    ("heimdall.evaluate",),
    ("heimdall.training",),
    ("heimdall.tracking",),
    ("heimdall.jobs",),
    ("heimdall.cli", "heimdall.api", "heimdall.worker"),
]
IGNORED = ("heimdall.storage.migrations",)  # Alembic's scripts, loaded by Alembic


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    mods = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {m: p for m, p in mods.items() if not m.startswith(IGNORED) and m != "heimdall"}


def _imports(name: str, path: Path) -> set[str]:
    """Every heimdall module `name` imports, at the top or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("heimdall"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.startswith("heimdall"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _layer(module: str) -> int | None:
    for i, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return i
    return None


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _graph() -> dict[str, set[str]]:
    """Module → the modules it imports; a package's own ancestors (its `__init__`s) are not edges."""
    mods = _modules()
    return {
        m: {i for i in _imports(m, p) if i in mods and i != m and not m.startswith(i + ".")}
        for m, p in mods.items()
    }


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        todo: list[list[str]] = [sorted(graph.get(root, ()))]
        state[root] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            nxt = todo[-1].pop(0)
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(sorted(graph.get(nxt, ())))
    return None


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in _modules() if _layer(m) is None)
    assert not unplaced, f"modules in no layer of tests/test_architecture.py: {unplaced}"


def test_no_module_imports_one_above_it() -> None:
    upward = []
    for mod, deps in _graph().items():
        for dep in deps:
            own, theirs = _layer(mod), _layer(dep)
            if own is None or theirs is None or _room(dep) == _room(mod):
                continue
            if theirs > own:
                upward.append(f"{mod} (layer {own}) imports {dep} (layer {theirs})")
    assert not upward, "imports against the one-way flow:\n" + "\n".join(sorted(upward))


def test_import_graph_has_no_cycles() -> None:
    graph = _graph()
    rooms: dict[str, set[str]] = defaultdict(set)
    for mod, deps in graph.items():
        rooms[_room(mod)].update(_room(d) for d in deps if _room(d) != _room(mod))
    for g, what in ((graph, "module"), (dict(rooms), "package")):
        cycle = _find_cycle(g)
        assert cycle is None, f"{what} import cycle: {' -> '.join(cycle or [])}"


def test_the_cycle_finder_finds_one() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from heimdall.cli import app\n    from . import sibling\n")
    found = _imports("heimdall.data.m", src)
    assert {"heimdall.cli", "heimdall.cli.app", "heimdall.data", "heimdall.data.sibling"} <= found
