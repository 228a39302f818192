"""The origin a job is enqueued with: the request id (and trace context) of the HTTP request or job
that enqueued it. The API sets it per request; tasks inherit their job's when they enqueue."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

#: {"request_id": …, "traceparent": …} of the work in progress, or None.
current_origin: ContextVar[dict[str, Any] | None] = ContextVar("skiplock_origin", default=None)
