from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import skiplock
from skiplock.db.sqlfile import Statement, all_statements, load_statements, parse_statements


def test_statements_are_split_by_name_headers() -> None:
    text = "-- name: one\nSELECT 1;\n\n-- name: two\n-- a comment\nSELECT 2\n"
    assert parse_statements(text) == {"one": "SELECT 1", "two": "-- a comment\nSELECT 2"}


def test_a_name_defined_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_statements("-- name: a\nSELECT 1\n-- name: a\nSELECT 2")


def test_loading_checks_names_against_the_fields() -> None:
    @dataclass
    class Wrong:
        lock: str
        nonexistent: str

    with pytest.raises(ValueError, match="nonexistent"):
        load_statements(Wrong, "skiplock.db.sql", "migrate.sql")


def test_loading_refuses_a_field_not_typed_statement() -> None:
    @dataclass
    class Untyped:
        lock: Statement
        unlock: Statement
        create_table: Statement
        applied: Statement
        record: str

    with pytest.raises(TypeError, match=r"\['record'\] must be typed Statement"):
        load_statements(Untyped, "skiplock.db.sql", "migrate.sql")


def test_a_loaded_statement_is_the_files_text() -> None:
    @dataclass
    class Migrate:
        lock: Statement
        unlock: Statement
        create_table: Statement
        applied: Statement
        record: Statement

    loaded = load_statements(Migrate, "skiplock.db.sql", "migrate.sql")
    assert all_statements(loaded) == parse_statements(
        (Path(skiplock.__file__).parent / "db" / "sql" / "migrate.sql").read_text(encoding="utf-8")
    )
