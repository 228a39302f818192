"""Print skiplock's import graph, its cycles and its crossings into private modules.

    python tools/import_graph.py            # or: make graph

Read from the source with `ast`, nothing imported. An edge `a -> b` is an `import b` or a
`from b import name` (or `from pkg import b` when `b` is a module) in `a`, marked by where it sits:

    top     at module level: runs when `a` is imported
    local   inside a function or method: runs when that code runs
    typing  under `if TYPE_CHECKING:`: never runs

A cycle is a strongly connected component of more than one module over the edges that run (top
and local); its legs are listed with a local leg marked, since that is where a cycle is usually
hidden. A private module is one whose name starts with `_`; it is crossed when a module outside
the package that holds it imports it (any kind of edge counts, a type too is a coupling).

As in most such tools, importing `a.b.c` is one edge to `a.b.c`, not also to `a` and `a.b`
(whose `__init__` runs too, but counting that would make every package a cycle with its
re-exports). Imports by name at runtime (`importlib.import_module(...)`) are not seen.

The structural tests in tests/unit/test_import_graph.py use the functions below.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("top", "local", "typing")


@dataclass(frozen=True, order=True)
class Edge:
    """One import statement's target, resolved to a module of the tree read."""

    source: str
    target: str
    kind: str
    line: int


def module_files(base: Path, package: str) -> dict[str, Path]:
    """Every module under `base/package`, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted((base / package).rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Each import statement with its kind (typing wins over local)."""

    def walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, kind
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "typing")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), kind)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, "typing" if kind == "typing" else "local")
            else:
                yield from walk(child, kind)

    yield from walk(tree, "top")


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    base = parts[:keep]
    return ".".join([*base, node.module] if node.module else base)


def edges_of(module: str, path: Path, known: Iterable[str]) -> list[Edge]:
    """The edges from `module` to modules in `known` (names outside it are third-party or stdlib)."""
    known = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[Edge] = set()
    for node, kind in _imports(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _absolute(module, path.name == "__init__.py", node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in known else base)
        for target in targets:
            # `import a.b.c` where only `a.b` is ours: the nearest enclosing module of ours.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(Edge(module, target, kind, node.lineno))
    return sorted(found)


def import_graph(modules: dict[str, Path], targets: Iterable[str] | None = None) -> list[Edge]:
    """Every edge between the modules given (or from them into `targets`)."""
    known = set(modules) | set(targets or ())
    return sorted(edge for name, path in modules.items() for edge in edges_of(name, path, known))


def runtime(edges: Iterable[Edge]) -> dict[str, set[str]]:
    """The edges that run (top and local), as an adjacency map."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.kind != "typing":
            graph.setdefault(edge.source, set()).add(edge.target)
    return graph


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module over the edges that run (Tarjan)."""
    graph = runtime(edges)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def elementary_cycles(edges: Iterable[Edge], limit: int = 10_000) -> list[tuple[str, ...]]:
    """Every simple circle over the edges that run, each starting at its smallest module.

    A tangle has exponentially many; past `limit` the search stops (the tangle is reported anyway).
    """
    edges = list(edges)
    graph = runtime(edges)
    found: list[tuple[str, ...]] = []
    for component in cycles(edges):
        members = set(component)
        for start in component:
            # Circles through `start` among modules after it, so each circle is found once.
            allowed = {m for m in members if m > start}

            def extend(path: list[str], start: str = start, allowed: set[str] = allowed) -> None:
                for succ in sorted(graph.get(path[-1], ())):
                    if len(found) >= limit:
                        return
                    if succ == start:
                        found.append(tuple(path))
                    elif succ in allowed and succ not in path:
                        extend([*path, succ])

            extend([start])
    return sorted(found)


def is_private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split("."))


def private_crossings(edges: Iterable[Edge]) -> list[Edge]:
    """Edges into a private module from outside the package that holds it."""
    crossed = []
    for edge in edges:
        parts = edge.target.split(".")
        private_at = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
        if not private_at:
            continue
        owner = ".".join(parts[: private_at[0]])
        if not (edge.source == owner or edge.source.startswith(owner + ".")):
            crossed.append(edge)
    return crossed


def folder_of(module: str) -> str:
    """The part of the tree a module belongs to: `skiplock.api.jobs` -> `skiplock.api`."""
    return ".".join(module.split(".")[:2])


def folder_edges(edges: Iterable[Edge]) -> list[Edge]:
    """The edges between folders (a top-level module such as `skiplock.service` is its own)."""
    return sorted(
        {
            Edge(folder_of(e.source), folder_of(e.target), e.kind, 0)
            for e in edges
            if folder_of(e.source) != folder_of(e.target)
        }
    )


def folder_legs(edges: Iterable[Edge], component: Iterable[str]) -> list[Edge]:
    """The module edges that make the legs of a loop between folders."""
    members = set(component)
    return [
        e
        for e in edges
        if e.kind != "typing"
        and folder_of(e.source) in members
        and folder_of(e.target) in members
        and folder_of(e.source) != folder_of(e.target)
    ]


def _leg(edges: list[Edge], source: str, target: str) -> str:
    kinds = sorted(
        {e.kind for e in edges if e.source == source and e.target == target and e.kind != "typing"}
    )
    lines = sorted(
        {e.line for e in edges if e.source == source and e.target == target and e.kind != "typing"}
    )
    mark = " (local)" if kinds == ["local"] else ""
    return f"{source} -> {target}{mark}  line {', '.join(map(str, lines))}"


def report(edges: list[Edge], crossings: list[Edge]) -> str:
    """The graph, its cycles and the private crossings as text."""
    out = ["# import graph of src/skiplock (top: module level, local: in a function, typing: TYPE_CHECKING)"]
    by_source: dict[str, list[Edge]] = {}
    for edge in edges:
        if edge.source.startswith("skiplock"):
            by_source.setdefault(edge.source, []).append(edge)
    for source in sorted(by_source):
        out.append(source)
        for target in sorted({e.target for e in by_source[source]}):
            kinds = sorted({e.kind for e in by_source[source] if e.target == target}, key=KINDS.index)
            out.append(f"    -> {target}" + ("" if kinds == ["top"] else f"  [{', '.join(kinds)}]"))
    src_edges = [e for e in edges if e.source.startswith("skiplock")]
    components = cycles(src_edges)
    out.append("")
    out.append(f"# cycles: {len(components)} strongly connected component(s) of more than one module")
    graph = runtime(src_edges)
    for component in components:
        out.append("  {" + ", ".join(component) + "}")
        for source in component:
            for target in sorted(graph.get(source, set()) & set(component)):
                out.append("      " + _leg(src_edges, source, target))
        circles = elementary_cycles(e for e in src_edges if e.source in component and e.target in component)
        out.append(f"    circles: {len(circles)}")
        for circle in circles:
            out.append("      " + " -> ".join([*circle, circle[0]]))
    folders = cycles(folder_edges(src_edges))
    out.append("")
    out.append(
        f"# loops between folders: {len(folders)} (first level under skiplock, over the edges that run)"
    )
    for component in folders:
        out.append("  {" + ", ".join(component) + "}")
        for edge in folder_legs(src_edges, component):
            mark = " (local)" if edge.kind == "local" else ""
            out.append(f"      {edge.source} -> {edge.target}{mark}  line {edge.line}")
    out.append("")
    out.append(f"# private modules imported from outside their package: {len(crossings)}")
    for edge in crossings:
        out.append(f"  {edge.source} -> {edge.target}  [{edge.kind}] line {edge.line}")
    return "\n".join(out)


def project_edges(root: Path = ROOT) -> list[Edge]:
    """Edges of src/skiplock, and of bench/ into src/skiplock."""
    src = module_files(root / "src", "skiplock")
    bench = module_files(root, "bench")
    return import_graph(src) + import_graph(bench, targets=src)


def main() -> int:
    edges = project_edges()
    print(report(edges, private_crossings(edges)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
