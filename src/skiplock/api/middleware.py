"""Request ids: taken from X-Request-ID or made, returned, and bound into every log line."""

from __future__ import annotations

import os
import re
import time

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from skiplock.queue.origin import current_origin

log = structlog.get_logger("skiplock.http")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _new_id() -> str:
    # 128 random bits as 32 hex digits, as uuid4().hex was, without building a UUID per request.
    return os.urandom(16).hex()


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if _VALID_ID.match(given) else _new_id()
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)["x-request-id"] = request_id
            await send(message)

        origin = current_origin.set({"request_id": request_id})  # jobs enqueued here carry it
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await app(scope, receive, send_with_id)
            finally:
                current_origin.reset(origin)
                log.info(
                    "http_request",
                    method=scope.get("method"),
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )

    return middleware
