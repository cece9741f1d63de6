"""The package's import graph: no cycles, and the kernel layer imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

import sj_spatial

PACKAGE = Path(sj_spatial.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names ``from ... import ...`` refers to (a module or a name in one)."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph() -> dict[str, set[str]]:
    """``{module: package modules it imports}``, at module level and inside functions."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                targets.update(_resolve(name, path.name == "__init__.py", node))
        # ``from . import x`` names a module; ``from .m import f`` names a module's member.
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert "sj_spatial.functional" in graph["sj_spatial.layers"]
    assert "sj_spatial.backends.cuda" in graph["sj_spatial.backends.cuda_lif"]
    assert "sj_spatial.backends.contract" in graph["sj_spatial.cells"]


def test_the_import_graph_has_no_cycle():
    # A package __init__ importing its own submodules is how Python packages work: the
    # submodules importing the package name back is not counted as a cycle.
    graph = import_graph()
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_backends_import_nothing_above_them():
    for name, targets in import_graph().items():
        if name.startswith("sj_spatial.backends"):
            above = sorted(t for t in targets if not t.startswith("sj_spatial.backends"))
            assert not above, f"{name} imports {above}"
