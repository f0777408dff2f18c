"""The package's layers: no module imports a module of a higher layer, and no two modules import each other.

Every `import` / `from ... import` under qmoe/ counts, at module level or inside a function (a lazy import is still
a dependency), relative ones resolved. A new module must belong to a layer (add its subpackage to LAYERS).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

QMOE = Path(__file__).resolve().parent.parent / "qmoe"

# Lowest first. A module may import modules of its own layer and of the layers before it, never one after it.
LAYERS = [
    ("core", ("qmoe", "qmoe.core")),  # "qmoe" is the root package itself (its __init__), not everything under it
    ("audio", ("qmoe.audio",)),
    ("datasets", ("qmoe.datasets",)),
    ("models", ("qmoe.models",)),
    ("deploy", ("qmoe.deploy",)),
    ("measure", ("qmoe.measure",)),
    ("experiments", ("qmoe.experiments",)),
    ("analysis", ("qmoe.analysis",)),
    ("app", ("qmoe.app", "qmoe.__main__")),
]


def modules() -> dict[str, Path]:
    """Every module under qmoe/ by dotted name (a package by its own name, for its __init__)."""
    out = {}
    for path in sorted(QMOE.rglob("*.py")):
        parts = list(path.relative_to(QMOE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            hit = module == p if p == "qmoe" else module == p or module.startswith(p + ".")
            if hit and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The qmoe modules `module` imports anywhere in its source (targets that are no module are returned as is,
    so a stale import shows up as unknown)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name == "qmoe" or a.name.startswith("qmoe.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == "qmoe" or target.startswith("qmoe.")):
                continue
            for a in node.names:  # `from pkg import submodule` imports the submodule
                out.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    out.discard(module)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def upward(g: dict[str, set[str]]) -> list[str]:
    """'a (layer) imports b (higher layer)' for every import that goes up."""
    out = []
    for a, targets in sorted(g.items()):
        for b in sorted(targets):
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} ({LAYERS[la][0]}) imports {b} ({LAYERS[lb][0]})")
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `g`: one list of modules per strongly connected component of more than one module."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_belongs_to_a_layer():
    assert [m for m in modules() if layer_of(m) is None] == []


def test_every_import_names_a_module_that_exists():
    g = graph()
    assert {f"{a} -> {b}" for a, targets in g.items() for b in targets if b not in g} == set()


def test_no_module_imports_a_higher_layer():
    assert upward(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_module_names_in_strings_exist():
    """Modules started by name (`python -m qmoe.experiments.jobs`, a subprocess's `from qmoe.x import y`) exist."""
    mods = modules()
    named = set()
    for path in mods.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named |= set(re.findall(r"^(qmoe(?:\.\w+)+)$", node.value))
                named |= set(re.findall(r"\bfrom (qmoe(?:\.\w+)*) import\b", node.value))
    assert named, "expected the job runner's module name at least"
    assert sorted(n for n in named if n not in mods) == []


@pytest.mark.parametrize("edge, kind", [
    (("qmoe.models.registry", "qmoe.models.experts"), "cycle"),  # the registry importing what registers into it
    (("qmoe.audio.backbones", "qmoe.deploy.runtime"), "upward"),
    (("qmoe.measure.energy", "qmoe.experiments.store"), "upward"),
    (("qmoe.core.paths", "qmoe.app.ui"), "upward"),
])
def test_the_checks_catch_an_added_import(edge, kind):
    g = graph()
    a, b = edge
    g[a] = g[a] | {b}
    assert (upward(g) if kind == "upward" else cycles(g)) != []
