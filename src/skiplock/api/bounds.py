"""Request input decoded with bounds, for every route: JSON no deeper than a limit and valid UTF-8
(else 400), no NUL in a JSON string (422 naming the field), none in a URL (400).

PostgreSQL cannot store NUL; the database layer would replace it, but a value a client sent is
refused instead, so the client learns of it. Lone surrogates cannot arrive in a string: the JSON
decoder refuses a ``\\ud800`` escape without its pair (400).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import ClientException, SerializationException
from litestar.serialization import decode_json
from litestar.types import ASGIApp, Empty, EmptyType, HTTPResponseStartEvent, Receive, Scope, Send

from skiplock.db.storable import storable_text
from skiplock.errors import InvalidArgumentsError

#: Nesting a JSON body may have: far more than any job's arguments need, and far below the depth at
#: which decoding, validation or storing would run out of stack.
MAX_JSON_DEPTH = 64


def decode_json_body(body: bytes, where: str = "") -> Any:
    """The JSON value of ``body`` (empty: null), checked; ``where`` prefixes the fields named in
    errors (a batch's ``[3]``). ClientException (400) for JSON that is invalid, not UTF-8 or
    nested deeper than :data:`MAX_JSON_DEPTH`; InvalidArgumentsError (422) for a NUL in a string."""
    try:
        value = decode_json(body or b"null")
    except RecursionError:
        raise _too_deep(where) from None
    except UnicodeDecodeError as exc:
        raise ClientException(f"{where}body is not valid UTF-8 (byte {exc.start})") from None
    except SerializationException as exc:
        raise ClientException(f"{where}body is not valid JSON: {exc}") from None
    # Cheap tests of the bytes first: nesting needs as many brackets, a NUL its \u0000 escape.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH or (b"\\" in body and b"\\u0000" in body):
        check_json(value, where)
    return value


def check_json(value: Any, where: str = "") -> None:
    """Raise for nesting past :data:`MAX_JSON_DEPTH` or a NUL in any key or string of ``value``."""
    stack: list[tuple[Any, int, str]] = [(value, 0, where)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise _nul(path)
        elif isinstance(node, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise _too_deep(where)
            if isinstance(node, list):
                stack.extend((item, depth + 1, f"{path}[{n}]") for n, item in enumerate(node))
                continue
            for key, item in node.items():
                field = f"{path}.{key}" if path else key
                if "\x00" in key:
                    raise _nul(field)
                stack.append((item, depth + 1, field))


def _nul(field: str) -> InvalidArgumentsError:
    field = storable_text(field) or "body"
    return InvalidArgumentsError(
        f"{field}: NUL characters (\\u0000) cannot be stored; remove them", field=field
    )


def _too_deep(where: str) -> ClientException:
    return ClientException(
        f"{where}JSON nested deeper than {MAX_JSON_DEPTH} levels", extra={"max_depth": MAX_JSON_DEPTH}
    )


class BoundedRequest(Request[Any, Any, Any]):
    """Litestar's request with :func:`decode_json_body` as its JSON decoder (every ``data``
    parameter is read through it)."""

    __slots__ = ("_checked_json",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked_json: Any | EmptyType = Empty

    async def json(self) -> Any:
        if self._checked_json is Empty:
            self._checked_json = decode_json_body(await self.body())
        return self._checked_json


def url_nul_middleware(app: ASGIApp) -> ASGIApp:
    """400 for a NUL in the path or the query string (``%00``), naming the query parameter; a
    websocket is accepted and closed with 4400, as for its other bad input."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        problem = _url_nul(scope.get("query_string", b""), scope["path"])
        if problem is None:
            await app(scope, receive, send)
        elif scope["type"] == ScopeType.WEBSOCKET:
            await receive()  # websocket.connect
            await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
            await send({"type": "websocket.close", "code": 4400, "reason": problem.detail[:120]})
        else:
            # Answered here, not raised: raised, it would pass the request-id middleware as an
            # error (logged as a 500, without its X-Request-ID) before Litestar turned it into a 400.
            body = orjson.dumps({"status_code": 400, "detail": problem.detail, "extra": problem.extra})
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

    return middleware


def _url_nul(query: bytes, path: str) -> ClientException | None:
    if b"%00" in query or b"\x00" in query:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        names = [key for key, value in pairs if "\x00" in key + value]
        name = storable_text(names[0]) if names else "query"
        return ClientException(
            f"query parameter {name!r} holds a NUL character (%00): not allowed", extra={"parameter": name}
        )
    if "\x00" in path:
        return ClientException("the path holds a NUL character (%00): not allowed")
    return None
