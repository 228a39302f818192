"""Values PostgreSQL can store: the one place text and JSON are made safe before they are sent.

PostgreSQL refuses NUL in ``text`` (``0x00``) and in ``jsonb`` (``\\u0000``), and UTF-8 cannot carry
lone surrogates (what ``surrogateescape`` makes of bytes that are not UTF-8, or what a ``\\ud800``
escape decodes to). One such character in a result, an error message or a CSV cell would make the
whole statement fail, and with it every other item of a batched write. Here each is replaced by
U+FFFD, visibly, so the value is stored and a reader sees where something was lost.

The connection codecs (:mod:`skiplock.db.pool`) call these for every ``text`` and ``jsonb``
parameter and COPY field, so callers need not. The common case costs one scan: the encoded form is
checked for what PostgreSQL would refuse, and only a value that holds some is rebuilt.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic_core import to_jsonable_python

#: What replaces each character PostgreSQL cannot store.
REPLACEMENT = "\ufffd"
_REPLACEMENT_BYTES = REPLACEMENT.encode()
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: Nesting kept when a JSON value has to be rebuilt: deeper parts become a marker string. orjson
#: itself stops at 255, and the rebuild must stay well inside Python's recursion limit.
MAX_STORED_DEPTH = 200
TOO_DEEP = f"{REPLACEMENT}nested deeper than {MAX_STORED_DEPTH} levels"


def storable_text(value: str) -> str:
    """``value`` with every NUL and every lone surrogate replaced by U+FFFD."""
    if "\x00" in value or (not value.isascii() and _UNSTORABLE.search(value)):
        return _UNSTORABLE.sub(REPLACEMENT, value)
    return value


def storable_bytes(data: bytes) -> str:
    """Bytes as storable text: what is not UTF-8 becomes U+FFFD, and so does NUL."""
    return data.decode("utf-8", "replace").replace("\x00", REPLACEMENT)


def text_bytes(value: str) -> bytes:
    """UTF-8 for a ``text`` parameter or COPY field (the connections' binary ``text`` encoder)."""
    try:
        data = value.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return storable_text(value).encode()
    except AttributeError:
        raise TypeError(f"expected str, got {type(value).__name__}") from None
    if b"\x00" in data:
        data = data.replace(b"\x00", _REPLACEMENT_BYTES)
    return data


def json_bytes(value: Any) -> bytes:
    """JSON PostgreSQL accepts as ``jsonb``, for any value; never raises.

    orjson writes it when it can and nothing needs replacing. Otherwise (a NUL, a lone surrogate,
    an integer past 64 bits, a type orjson does not know, nesting past its limit) the value is
    rebuilt from plain JSON types first: see :func:`storable_json`.
    """
    try:
        data = orjson.dumps(value)
    except TypeError:
        return _rebuilt(value)
    # orjson writes NUL as \u0000 (a hit may also be an escaped backslash before "u0000", which the
    # rebuild leaves as it is). Most JSON has no backslash at all: one memchr, then the 6-byte search.
    if b"\\" in data and b"\\u0000" in data:
        return _rebuilt(value)
    return data


def json_text(value: Any) -> str | None:
    """:func:`json_bytes` as text, for a jsonb parameter sent as text (None stays NULL)."""
    return None if value is None else json_bytes(value).decode()


def _rebuilt(value: Any) -> bytes:
    # The stdlib writes integers of any size; the rebuilt value holds nothing else it would refuse.
    text = json.dumps(storable_json(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode()


def storable_json(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON types PostgreSQL can store: text made storable (keys too), floats
    that are not finite as null (as orjson writes them), bytes decoded, other types as pydantic
    would serialise them (else their ``str``), and nesting past :data:`MAX_STORED_DEPTH` cut off."""
    if isinstance(value, str):
        return storable_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_STORED_DEPTH:
        return TOO_DEEP
    if isinstance(value, Mapping):
        return {_key(k): storable_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [storable_json(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return storable_bytes(bytes(value))
    try:
        plain = to_jsonable_python(value, fallback=str)
    except Exception:  # user types: their serialisation may raise anything
        plain = _str_of(value)
    if type(plain) is type(value):  # nothing simpler came out: keep its text
        plain = _str_of(value)
    return storable_json(plain, depth + 1)


def _key(key: object) -> str:
    if isinstance(key, str):
        return storable_text(key)
    if key is None or isinstance(key, bool):
        return json.dumps(key)  # as JSON writers spell them: null, true, false
    return storable_text(_str_of(key))


def _str_of(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"
