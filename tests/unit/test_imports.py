"""`pipeline/` imports hold no circle, and no Celery (design: the pipeline is plain Python).

An import at a module's top level (not under `if TYPE_CHECKING:`, not inside a function) is
an edge; a package's `__init__` importing its own children is the package's layout, not a
circle. Walked with `ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"


def module_name(path: Path) -> str:
    parts = path.relative_to(PIPELINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PIPELINE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = {m for m in top_level_imports(path) if m in modules and m != name}
        if path.name == "__init__.py":  # a package importing its own children
            targets = {m for m in targets if not m.startswith(f"{name}.")}
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_pipeline_imports_hold_no_circle():
    assert cycles(graph()) == []


def test_the_walker_finds_a_circle_when_there_is_one():
    edges = graph()
    edges["pipeline.errors"] = edges["pipeline.errors"] | {"pipeline.ledger.base"}
    assert any({"pipeline.errors", "pipeline.ledger.base"} <= set(c) for c in cycles(edges))


def test_the_pipeline_imports_no_celery():
    for path in PIPELINE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "import celery" not in source and "from celery" not in source, path
