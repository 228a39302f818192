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

from skiplock.db.pool import DB_UNAVAILABLE, database_error
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
    StatementRefusedError,
    StatementStoppedError,
    UnknownTaskError,
    UnsupportedMediaTypeError,
    UploadTimeoutError,
    UploadTooLargeError,
    str_of,
)

log = structlog.get_logger("skiplock.api")

#: Seconds a client is told to wait before retrying a 503 (a restart or failover takes about this).
RETRY_AFTER_S = 2

_STATUS: list[tuple[type[SkiplockError], int]] = [
    (UnknownTaskError, HTTP_422_UNPROCESSABLE_ENTITY),  # a NotFoundError, but bad input: first
    (NotFoundError, HTTP_404_NOT_FOUND),
    (InvalidArgumentsError, HTTP_422_UNPROCESSABLE_ENTITY),
    (ConflictError, HTTP_409_CONFLICT),
    (StatementRefusedError, HTTP_500_INTERNAL_SERVER_ERROR),  # a fault of ours: a retry fails again
    (DatabaseError, HTTP_503_SERVICE_UNAVAILABLE),  # unavailable, or a statement stopped: retry
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
    extra = exc.extra or None
    if isinstance(exc, DatabaseError):  # the id a client quotes to find the statement in the log
        extra = {**exc.extra, "request_id": structlog.contextvars.get_contextvars().get("request_id")}
    return Response(
        {"status_code": status, "detail": exc.message, "extra": extra},
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
    """A driver or socket error that escaped a handler, translated by the db layer and answered as
    that error: the database away (unreachable, the connection broke, the server shutting down, a
    limit reached) or a statement stopped by a time limit, a lock wait or a conflict is a 503 with
    Retry-After, never a 500; a statement the server refused for another reason is a fault of ours,
    a 500. The body names the error class, the SQLSTATE and the request id, never the server's
    message (it may quote values): that is logged, once."""
    error = database_error(exc)
    error_class, sqlstate = error.extra.get("error"), error.extra.get("sqlstate")
    path = request.url.path
    if isinstance(error, StatementRefusedError):
        log.error(
            "request_database_error", path=path, error_class=error_class, sqlstate=sqlstate, exc_info=exc
        )
    elif isinstance(error, StatementStoppedError):
        log.warning(
            "request_statement_stopped",
            path=path,
            error_class=error_class,
            sqlstate=sqlstate,
            error=str_of(exc),
        )
    else:
        log.warning("request_database_unavailable", path=path, error_class=error_class, error=str_of(exc))
    return skiplock_error_handler(request, error)


def validation_as_422(_request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """For controllers whose contract answers every bad input with 422 naming the field (schedules,
    and /fetch, whose body is the fetch_api task's arguments as POST /jobs validates them)."""
    return Response(
        {"status_code": HTTP_422_UNPROCESSABLE_ENTITY, "detail": exc.detail, "extra": exc.extra},
        status_code=HTTP_422_UNPROCESSABLE_ENTITY,
    )
