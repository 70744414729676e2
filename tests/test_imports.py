"""``lib``'s own imports run one way: no module imports, directly or through others, a module that imports it.

Both module-level and function-level imports count (a function-level import that dodges a cycle still
is one); the graph is read from the source with ``ast``, nothing is imported.
"""
from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"


def module_name(path: Path) -> str:
    """``lib/quantize/hqq.py`` -> ``'lib.quantize.hqq'``; ``lib/quantize/__init__.py`` -> ``'lib.quantize'``."""
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lib_imports(path: Path, modules: set[str]) -> set[str]:
    """The ``lib`` modules that ``path`` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from . import common`` imports a submodule; ``from . import check_allowed`` a name of the package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(LIB.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): lib_imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None.

    >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state: dict[str, str] = {}  # "open" while on the current path, "done" once explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "lib.config" in graph["lib.grids"] and "lib.quantize.common" in graph["lib.quantize.hqq"]
    assert "lib.quantize" in graph["lib.quantize.bnb"]  # ``from . import check_allowed``
    assert graph["lib.config"] == set()  # the bottom: pure


def test_lib_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle among lib modules: " + " -> ".join(cycle)
