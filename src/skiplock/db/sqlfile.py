"""Named SQL statements in ``.sql`` files, loaded into typed attribute objects.

A file holds blocks headed ``-- name: some_statement``. :func:`load_statements` checks that
the file's names and the target class's fields are the same set, and that every field is a
:data:`Statement`, so a typo fails at import.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from typing import Any, NewType, TypeVar

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)

#: The text of one named statement, as read from a ``.sql`` file. Only :func:`parse_statements`
#: makes one, so a string built at run time (an f-string, a concatenation) does not type-check
#: where a statement is expected. A ``str`` at run time: no cost on the hot path. (``LiteralString``
#: cannot say this: text read from a file is never a literal to the type checker.)
Statement = NewType("Statement", str)

T = TypeVar("T")


def parse_statements(text: str) -> dict[str, Statement]:
    """Split ``text`` into ``{name: statement}`` by its ``-- name:`` headers."""
    parts = _HEADER.split(text)
    statements: dict[str, Statement] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in statements:
            raise ValueError(f"statement {name!r} is defined twice")
        statements[name] = Statement(body.strip().rstrip(";"))
    return statements


def load_statements(cls: type[T], package: str, filename: str) -> T:
    """Build ``cls`` (a dataclass of :data:`Statement` fields) from ``package/filename``."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    statements = parse_statements(text)
    declared = dataclasses.fields(cls)  # type: ignore[arg-type]
    fields = {f.name for f in declared}
    if fields != set(statements):
        raise ValueError(
            f"{filename}: missing {sorted(fields - set(statements))}, "
            f"unexpected {sorted(set(statements) - fields)}"
        )
    not_statements = sorted(f.name for f in declared if f.type not in ("Statement", Statement))
    if not_statements:
        raise TypeError(f"{cls.__name__}: fields {not_statements} must be typed Statement")
    built: Any = cls(**statements)
    return built  # type: ignore[no-any-return]


def all_statements(obj: object) -> dict[str, Statement]:
    """Every statement of a loaded statements object, by name (for the prepare-all test)."""
    return dataclasses.asdict(obj)  # type: ignore[call-overload, no-any-return]
