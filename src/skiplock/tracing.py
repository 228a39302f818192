"""OpenTelemetry tracing, off unless OTEL_EXPORTER_OTLP_ENDPOINT (or SKIPLOCK_OTEL=on) asks for it.

A span per request (Litestar's plugin), a span per job attempt whose parent is the request (or job)
that enqueued it (its trace context travels in the job's ``origin``), and spans for tasks' aiohttp
calls. One provider per process; tests install their own with an in-memory exporter.

OpenTelemetry is the ``otel`` extra: nothing here imports it until tracing is turned on, and
turning it on without the extra is a ConfigError that says what to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from skiplock._extras import require
from skiplock._version import __version__
from skiplock.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

_provider: TracerProvider | None = None


def enabled(settings: Settings) -> bool:
    if settings.otel == "auto":
        return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return settings.otel == "on"


def configure(settings: Settings, provider: TracerProvider | None = None) -> TracerProvider | None:
    """The process's provider: ``provider`` if given (tests), else an OTLP exporter when enabled."""
    global _provider
    if provider is None and enabled(settings) and _provider is None:
        require("otel", "tracing (SKIPLOCK_OTEL, OTEL_EXPORTER_OTLP_ENDPOINT)")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": "skiplock", "service.version": __version__})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_* env
    if provider is not None:
        _provider = provider
    return _provider if enabled(settings) or provider is not None else None


def reset() -> None:
    """Forget the provider (tests)."""
    global _provider
    _provider = None


def provider() -> TracerProvider | None:
    return _provider


def current_context() -> dict[str, str]:
    """The active span's trace context (``traceparent``…), to store with a job; empty when none."""
    if _provider is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def job_span(origin: dict[str, Any] | None, task: str, attributes: dict[str, Any]) -> Iterator[Span | None]:
    """A span for one job attempt, child of the trace the job was enqueued in."""
    if _provider is None:
        yield None
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    parent = propagate.extract({k: v for k, v in (origin or {}).items() if isinstance(v, str)})
    tracer = _provider.get_tracer("skiplock", __version__)
    with tracer.start_as_current_span(
        f"job {task}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes, record_exception=False
    ) as span:
        yield span


def mark_outcome(span: Span | None, state: str, error: str | None) -> None:
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("skiplock.outcome", state)
    if state == "failed" or (state == "queued" and error):
        span.set_status(Status(StatusCode.ERROR, error))


def aiohttp_trace_configs() -> list[Any]:
    """Spans for the fetcher's requests when tracing is on."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    return [create_trace_config(tracer_provider=_provider)]


__all__ = [
    "aiohttp_trace_configs",
    "configure",
    "current_context",
    "enabled",
    "job_span",
    "mark_outcome",
    "provider",
    "reset",
]
