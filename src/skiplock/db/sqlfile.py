"""Named SQL statements in ``.sql`` files, loaded into typed attribute objects.

A file holds blocks headed ``-- name: some_statement``. :func:`load_statements` checks that
the file's names and the target class's fields are the same set, so a typo fails at import.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from typing import Any, TypeVar

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)

T = TypeVar("T")


def parse_statements(text: str) -> dict[str, str]:
    """Split ``text`` into ``{name: statement}`` by its ``-- name:`` headers."""
    parts = _HEADER.split(text)
    statements: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in statements:
            raise ValueError(f"statement {name!r} is defined twice")
        statements[name] = body.strip().rstrip(";")
    return statements


def load_statements(cls: type[T], package: str, filename: str) -> T:
    """Build ``cls`` (a dataclass of ``str`` fields) from ``package/filename``."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    statements = parse_statements(text)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if fields != set(statements):
        raise ValueError(
            f"{filename}: missing {sorted(fields - set(statements))}, "
            f"unexpected {sorted(set(statements) - fields)}"
        )
    built: Any = cls(**statements)
    return built  # type: ignore[no-any-return]


def all_statements(obj: object) -> dict[str, str]:
    """Every statement of a loaded statements object, by name (for the prepare-all test)."""
    return dataclasses.asdict(obj)  # type: ignore[call-overload, no-any-return]
