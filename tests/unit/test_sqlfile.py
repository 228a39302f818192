from __future__ import annotations

from dataclasses import dataclass

import pytest

from skiplock.db.sqlfile import load_statements, parse_statements


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
