"""The public Python surface is exactly what the README documents: its "Python surface" list names
every public package (and every public module with an ``__all__``) and, for each, its ``__all__``
in order; both directions fail (a name exported but not documented, documented but not exported, a
package left out). Each ``__all__`` is sorted and complete (what httpx checks of its own), and every
``from skiplock… import …`` in the README's code imports documented names only."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def documented_surface(readme: str) -> dict[str, list[str]]:
    """Module → its names, from the README's "Python surface:" list (items may wrap onto lines
    indented by two spaces; a parenthesis after the module describes it)."""
    _, found, rest = readme.partition("\nPython surface:")
    assert found, "the README has no 'Python surface:' list"
    items: list[str] = []
    for line in rest.split("\n\n", 2)[1].splitlines():
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
        else:
            break
    surface: dict[str, list[str]] = {}
    for item in items:
        match = re.fullmatch(r"`(skiplock[\w.]*)`(?: \([^`)]*\))?: (.+)", item)
        assert match, f"not a 'module: names' item: {item!r}"
        module, names = match.groups()
        assert module not in surface, f"{module} is listed twice"
        surface[module] = re.findall(r"`([^`]+)`", names)
    return surface


DOCUMENTED = documented_surface(README)


def _declares_all(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for node in tree.body
    )


def public_modules() -> set[str]:
    """Every package under src/skiplock (its sql/ folders hold statements, not code) and every other
    module that declares ``__all__``, none of them private (no part begins with ``_``)."""
    found = set()
    for path in (SRC / "skiplock").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
            if parts[-1] == "sql":
                continue
        elif not _declares_all(path):
            continue
        if not any(p.startswith("_") for p in parts):
            found.add(".".join(parts))
    return found


def test_the_readme_lists_every_public_module_and_nothing_else() -> None:
    assert set(DOCUMENTED) == public_modules()


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_a_modules_all_is_exactly_what_the_readme_documents(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == DOCUMENTED[name], f"{name}.__all__ and the README's Python surface differ"
    assert exported == sorted(exported)
    for item in exported:
        assert hasattr(module, item), item


def readme_imports(readme: str) -> list[tuple[str, str]]:
    """(module, name) of each ``from skiplock… import …`` in the README's Python code blocks (read
    line by line: a block may be a fragment that does not parse)."""
    found = []
    for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S):
        for module, names in re.findall(r"^\s*from (skiplock[\w.]*) import (\([^)]*\)|[^#\n]+)", block, re.M):
            for name in names.strip("() \n").split(","):
                found.append((module, name.split(" as ")[0].strip()))
    return found


def test_the_readmes_code_imports_only_documented_names() -> None:
    imports = readme_imports(README)
    assert ("skiplock", "task") in imports  # the parser found the examples
    undocumented = [(m, n) for m, n in imports if n not in DOCUMENTED.get(m, [])]
    assert not undocumented
