"""What the database boundary makes of text and JSON it could not store as they are."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiplock.db.storable import (
    MAX_STORED_DEPTH,
    REPLACEMENT,
    TOO_DEEP,
    json_bytes,
    json_text,
    storable_bytes,
    storable_text,
    text_bytes,
)

HOSTILE_CHARS = st.one_of(
    st.characters(), st.characters(categories=["Cs"]), st.sampled_from(["\x00", "\ud800", "\udc80"])
)
#: Half the examples hold at least one character PostgreSQL cannot store, whatever hypothesis draws.
HOSTILE = st.one_of(
    st.text(HOSTILE_CHARS),
    st.builds(
        lambda a, bad, b: a + bad + b, st.text(), st.sampled_from(["\x00", "\ud800", "\udfff"]), st.text()
    ),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE, inner, max_size=4),
    max_leaves=20,
)


def expected(text: str) -> str:
    return "".join(REPLACEMENT if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


def has_unstorable(value: Any) -> bool:
    return "\\u0000" in json.dumps(value) or any(
        "\ud800" <= c <= "\udfff" for c in json.dumps(value, ensure_ascii=False)
    )


@given(HOSTILE)
def test_text_keeps_every_character_but_nul_and_lone_surrogates(text: str) -> None:
    fixed = storable_text(text)
    assert fixed == expected(text)
    assert text_bytes(text) == fixed.encode()
    assert b"\x00" not in text_bytes(text)


@given(st.text())
def test_storable_text_is_the_same_object_when_nothing_needs_replacing(text: str) -> None:
    text = text.replace("\x00", "")
    assert storable_text(text) is text


@given(st.binary())
def test_bytes_become_text_with_what_is_not_utf8_replaced(data: bytes) -> None:
    text = storable_bytes(data)
    assert "\x00" not in text
    text.encode()  # valid UTF-8: no lone surrogate
    if b"\x00" not in data:
        try:
            assert text == data.decode()
        except UnicodeDecodeError:
            assert REPLACEMENT in text


@given(JSON_VALUES)
def test_any_json_value_encodes_to_jsonb_postgresql_accepts(value: Any) -> None:
    data = json_bytes(value)
    decoded = orjson.loads(data)  # valid UTF-8 and valid JSON: no lone surrogate, no NaN
    assert b"\\u0000" not in data.replace(b"\\\\", b"")
    assert not has_unstorable(decoded)
    assert json_text(value) == (None if value is None else data.decode())


@given(JSON_VALUES)
def test_values_without_unstorable_text_encode_as_orjson_writes_them(value: Any) -> None:
    if has_unstorable(value):
        return
    try:
        direct = orjson.dumps(value)
    except TypeError:  # an integer past 64 bits
        return
    assert json_bytes(value) == direct


def test_replacements_inside_keys_values_and_lists() -> None:
    value = {"a\x00": ["b\ud800", {"\udc80": "ok"}], "n": 2**70, "f": math.nan, "raw": b"\xff\x00"}
    assert orjson.loads(json_bytes(value)) == {
        "a\ufffd": ["b\ufffd", {"\ufffd": "ok"}],
        "n": 2**70,
        "f": None,
        "raw": "\ufffd\ufffd",
    }


def test_an_escaped_backslash_before_u0000_is_left_as_it_is() -> None:
    assert orjson.loads(json_bytes({"path": "C:\\u0000"})) == {"path": "C:\\u0000"}


def test_nesting_deeper_than_the_limit_is_cut_off_not_raised() -> None:
    deep: Any = "\x00"
    for _ in range(5000):
        deep = [deep]
    stored = orjson.loads(json_bytes(deep))
    depth = 0
    while isinstance(stored, list):
        stored, depth = stored[0], depth + 1
    assert depth == MAX_STORED_DEPTH
    assert stored == TOO_DEEP


def test_a_cycle_is_cut_off_too() -> None:
    cycle: list[Any] = ["\x00"]
    cycle.append(cycle)
    assert orjson.loads(json_bytes(cycle))[0] == REPLACEMENT


@dataclasses.dataclass
class Point:
    label: str


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_other_types_become_plain_json() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    value = {"p": Point("x\x00"), "d": Decimal("1.5"), "t": when, "s": {1}, "u": Unprintable(), 3: "k"}
    assert orjson.loads(json_bytes(value)) == {
        "p": {"label": "x\ufffd"},
        "d": "1.5",
        "t": "2026-01-02T00:00:00Z",
        "s": [1],
        "u": "<Unprintable>",
        "3": "k",
    }


def test_a_non_str_passed_as_text_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expected str"):
        text_bytes(3)  # type: ignore[arg-type]
