"""skiplock's errors as HTTP responses, in Litestar's shape: {status_code, detail, extra}."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_408_REQUEST_TIMEOUT,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_502_BAD_GATEWAY,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_504_GATEWAY_TIMEOUT,
)

from skiplock.db.pool import DB_UNAVAILABLE, is_unavailable
from skiplock.errors import (
    BusyError,
    ConflictError,
    DatabaseError,
    FetchError,
    FetchRefusedError,
    FetchTimeoutError,
    InvalidArgumentsError,
    InvalidUploadError,
    NotFoundError,
    SkiplockError,
    UnknownTaskError,
    UnsupportedMediaTypeError,
    UploadTimeoutError,
    UploadTooLargeError,
)
from skiplock.service import str_of

log = structlog.get_logger("skiplock.api")

#: Seconds a client is told to wait before retrying a 503 (a restart or failover takes about this).
RETRY_AFTER_S = 2

_STATUS: list[tuple[type[SkiplockError], int]] = [
    (UnknownTaskError, HTTP_422_UNPROCESSABLE_ENTITY),  # a NotFoundError, but bad input: first
    (NotFoundError, HTTP_404_NOT_FOUND),
    (InvalidArgumentsError, HTTP_422_UNPROCESSABLE_ENTITY),
    (ConflictError, HTTP_409_CONFLICT),
    (DatabaseError, HTTP_503_SERVICE_UNAVAILABLE),
    (BusyError, HTTP_503_SERVICE_UNAVAILABLE),
    (FetchRefusedError, HTTP_422_UNPROCESSABLE_ENTITY),  # the URL given may not be fetched
    (FetchTimeoutError, HTTP_504_GATEWAY_TIMEOUT),
    (FetchError, HTTP_502_BAD_GATEWAY),  # the upstream failed: its reason is in detail
    (InvalidUploadError, HTTP_400_BAD_REQUEST),
    (UploadTooLargeError, HTTP_413_REQUEST_ENTITY_TOO_LARGE),
    (UploadTimeoutError, HTTP_408_REQUEST_TIMEOUT),
    (UnsupportedMediaTypeError, HTTP_415_UNSUPPORTED_MEDIA_TYPE),
]


def status_for(exc: SkiplockError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return HTTP_500_INTERNAL_SERVER_ERROR


def skiplock_error_handler(
    _request: Request[Any, Any, Any], exc: SkiplockError
) -> Response[dict[str, object]]:
    status = status_for(exc)
    return Response(
        {"status_code": status, "detail": exc.message, "extra": exc.extra or None},
        status_code=status,
        headers=_retry_after(status),
    )


def _retry_after(status: int) -> dict[str, str] | None:
    return {"Retry-After": str(RETRY_AFTER_S)} if status == HTTP_503_SERVICE_UNAVAILABLE else None


#: What the driver or the socket raises when a handler's statement fails; mapped by
#: :func:`database_error_handler`.
#: The db layer's own list (TimeoutError is an OSError: an acquire or a statement past its limit).
DRIVER_ERRORS: tuple[type[Exception], ...] = DB_UNAVAILABLE


def database_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    """A driver or socket error that escaped a handler: the database is away (unreachable, the
    connection broke, the server shutting down, a limit reached) is a 503 with Retry-After, never
    a 500; a statement the server refused for its values is a bug, a 500 without its details."""
    if is_unavailable(exc):
        log.warning("request_database_unavailable", path=request.url.path, error=str_of(exc))
        status, detail = HTTP_503_SERVICE_UNAVAILABLE, "the database is unavailable; retry shortly"
    else:
        log.error("request_database_error", path=request.url.path, exc_info=exc)
        status, detail = HTTP_500_INTERNAL_SERVER_ERROR, "Internal Server Error"
    return Response(
        {"status_code": status, "detail": detail, "extra": None},
        status_code=status,
        headers=_retry_after(status),
    )


def validation_as_422(_request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """For controllers whose contract answers every bad input with 422 naming the field (schedules,
    and /fetch, whose body is the fetch_api task's arguments as POST /jobs validates them)."""
    return Response(
        {"status_code": HTTP_422_UNPROCESSABLE_ENTITY, "detail": exc.detail, "extra": exc.extra},
        status_code=HTTP_422_UNPROCESSABLE_ENTITY,
    )
