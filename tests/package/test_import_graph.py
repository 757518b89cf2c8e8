"""The package's imports run one way: no module takes part in an import cycle.

Every ``import`` and ``from ... import`` of a netsculpt module is an edge, wherever it stands
(a deferred import inside a function is still a dependency); only imports under
``if TYPE_CHECKING:`` are left out, since they never run. A name imported from a package is
followed to the module that defines it, so re-exports in ``__init__`` do not hide an edge.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import netsculpt

ROOT = Path(netsculpt.__file__).parent


def _modules() -> dict[str, Path]:
    found = {"netsculpt": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix="netsculpt."):
        if info.name == "netsculpt.__main__":
            continue
        module = importlib.import_module(info.name)
        found[info.name] = Path(module.__file__ or "")
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def _target(package: str, name: str, modules: dict[str, Path]) -> str:
    """The module that defines ``name`` imported from ``package``."""
    if f"{package}.{name}" in modules:
        return f"{package}.{name}"
    value = getattr(importlib.import_module(package), name, None)
    defined_in = getattr(value, "__module__", None)
    return defined_in if defined_in in modules else package


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges[name].add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")
                    keep = len(parts) - node.level + (1 if is_package else 0)
                    base = ".".join(parts[:keep] + ([base] if base else []))
                if base not in modules:
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        edges[name].add(base)
                    else:
                        edges[name].add(_target(base, alias.name, modules))
        edges[name].discard(name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_library_never_imports_the_command_line() -> None:
    edges = import_graph()
    offenders = sorted(
        f"{src} -> {dst}"
        for src, dsts in edges.items()
        if not src.startswith("netsculpt.cli")
        for dst in dsts
        if dst.startswith("netsculpt.cli")
    )
    assert offenders == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
