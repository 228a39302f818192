"""OpenTelemetry: a span tree from the request through the job it enqueued to the job's HTTP calls,
exported in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from skiplock import tracing
from skiplock.settings import Settings
from tests.conftest import make_settings
from tests.integration.test_api import wait_for_state
from tests.support.live import app_client
from tests.support.upstream import Upstream, upstream_server

Client = AsyncTestClient[Any]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    yield spans
    tracing.reset()


async def traced_client(
    settings: Settings, exporter: InMemorySpanExporter, registry: Any
) -> AsyncIterator[Client]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with app_client(settings, registry, tracer_provider=provider) as client:
        yield client


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


async def test_request_job_and_its_fetch_form_one_trace(
    dsn: str, exporter: InMemorySpanExporter, registry: Any, upstream: Upstream
) -> None:
    settings = make_settings(dsn, otel="on", fetch_allow_private=True)
    async for api in traced_client(settings, exporter, registry):
        response = await api.post(
            "/jobs", json={"task": "scrape", "args": {"url": upstream.url("/html/index")}}
        )
        assert response.status_code == 201
        await wait_for_state(api, response.json()["id"], "succeeded")
    spans = list(exporter.get_finished_spans())
    request = next(
        s
        for s in spans
        if s.kind == SpanKind.SERVER
        and s.attributes is not None
        and s.attributes.get("http.method") == "POST"
    )
    job = next(s for s in spans if s.name == "job scrape")
    fetch = next(s for s in spans if s.kind == SpanKind.CLIENT and s.name.startswith("GET"))
    assert job.context.trace_id == request.context.trace_id == fetch.context.trace_id
    assert parent_of(job, spans) is request
    assert parent_of(fetch, spans) is job
    assert job.attributes is not None
    assert job.attributes["skiplock.job_id"] == response.json()["id"]
    assert job.attributes["skiplock.outcome"] == "succeeded"


async def test_a_follow_up_job_is_a_child_of_the_job_that_enqueued_it(
    dsn: str, exporter: InMemorySpanExporter, registry: Any
) -> None:
    async for api in traced_client(make_settings(dsn, otel="on"), exporter, registry):
        parent = (await api.post("/jobs", json={"task": "enqueue_child", "args": {"marker": "t"}})).json()
        done = await wait_for_state(api, parent["id"], "succeeded")
        await wait_for_state(api, done["result"]["child"], "succeeded")
        failing = (await api.post("/jobs", json={"task": "fails_permanently"})).json()
        await wait_for_state(api, failing["id"], "failed")
    spans = list(exporter.get_finished_spans())
    first = next(s for s in spans if s.name == "job enqueue_child")
    child = next(s for s in spans if s.name == "job record_run")
    assert parent_of(child, spans) is first
    failed = next(s for s in spans if s.name == "job fails_permanently")
    assert failed.status.status_code.name == "ERROR"


async def test_no_spans_and_no_trace_context_when_tracing_is_off(dsn: str, registry: Any) -> None:
    async with app_client(make_settings(dsn, otel="off"), registry) as api:
        job = (await api.post("/jobs", json={"task": "noop"}, headers={"x-request-id": "r1"})).json()
    assert job["origin"] == {"request_id": "r1"}
    assert tracing.provider() is None
