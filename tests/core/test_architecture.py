"""The import graph of ``service/``: no loops, and no import from a lower layer back up.

Layers, lowest first: the core (documents -> chunking -> index -> retrieval -> answering ->
engine), the HTTP API, the evaluation tools (which may talk to the API), the CLI, and
``__main__``. Imports inside functions count as much as those at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
LAYERS = {"api": 1, "evaluation": 2, "cli": 3, "__main__": 4}  # everything else: the core, 0


def _modules() -> dict[str, Path]:
    modules = {}
    for path in SERVICE.rglob("*.py"):
        parts = ("service", *path.relative_to(SERVICE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ours that ``name`` (a module or a name inside one) belongs to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {owner for n in names if n.startswith("service") and (owner := _owner(n))}
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_the_graph_is_read() -> None:
    """The parser sees real edges (a broken parser would make the checks below pass)."""
    assert "service.index_store" in GRAPH["service.ingest"]
    assert "service.reranking" in GRAPH["service.config"]  # imported inside a validator
    assert "service.evaluation.runner" in GRAPH["service.cli.evaluating"]


def test_no_import_loops() -> None:
    loops = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert loops == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_from_a_higher_layer(module: str) -> None:
    upward = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert upward == [], f"{module} imports from a higher layer: {upward}"


def test_the_corpus_readers_stand_alone() -> None:
    """``service.documents`` needs nothing else of ours (a PDF reader lands there alone)."""
    inside = {m for m in MODULES if m.startswith("service.documents")}
    outside = {(m, dep) for m in inside for dep in GRAPH[m] if dep not in inside}
    assert outside == set()
