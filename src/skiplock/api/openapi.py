"""What the OpenAPI document says that Litestar cannot read off a handler: the bearer scheme the
routes name, the tags, and the request bodies of handlers that read theirs raw (a batch, a
workflow, an upload), with examples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPIResponse,
    Operation,
    RequestBody,
    SecurityRequirement,
    SecurityScheme,
    Tag,
)
from litestar.openapi.spec import OpenAPIMediaType as MediaTypeDoc

#: The name of the scheme in ``components.securitySchemes``.
BEARER = "bearer"
#: ``security=`` of every controller and route that takes a key (all but the PUBLIC_ROUTE ones).
NEEDS_KEY: list[SecurityRequirement] = [{BEARER: []}]

BEARER_SCHEME = SecurityScheme(
    type="http",
    scheme="bearer",
    bearer_format="API key (sk_…) or JWT",
    description=(
        "`Authorization: Bearer <key>`: an API key made with `skiplock keys create` (its scopes: "
        "jobs:read, jobs:write, schedules:write, admin), or a JWT when SKIPLOCK_JWT_SECRET or "
        "SKIPLOCK_JWT_JWKS_URL is set. Browsers' EventSource and WebSocket may send it as `?token=` "
        "on reads instead. With no key made, a service bound to a loopback address runs open."
    ),
)

TAGS = [
    Tag(name="jobs", description="Enqueue, read, list, cancel and retry jobs; wait for their results."),
    Tag(name="events", description="A job's state, progress and log events: history and a live stream."),
    Tag(name="workflows", description="DAGs of steps: each a job, run once the steps it needs succeeded."),
    Tag(name="schedules", description="Cron schedules that enqueue a job at each fire time."),
    Tag(name="queues", description="Queues' counts, pausing and limits."),
    Tag(name="tasks", description="The registered tasks and their argument schemas."),
    Tag(name="workers", description="The fleet: every process's row, and quiet, resume, stop or resize one."),
    Tag(name="stats", description="Jobs finished, waits and queue depth per minute, from the rollup."),
    Tag(name="imports", description="CSV uploads loaded by the import_csv task."),
    Tag(name="fetch", description="Fetching an external JSON API into records."),
    Tag(name="scrape", description="What the scrape task stored about a page."),
    Tag(name="health", description="Liveness and readiness probes (no key needed)."),
]


def openapi_config(version: str, render_plugins: list[OpenAPIRenderPlugin]) -> OpenAPIConfig:
    """The document at /schema/openapi.json, shown by ``render_plugins`` (the pages under /schema):
    handlers' docstrings are their descriptions."""
    return OpenAPIConfig(
        title="skiplock",
        version=version,
        description=(
            "Background jobs, progress and cron on PostgreSQL alone. Besides these routes, two "
            "websockets (which OpenAPI cannot describe) send job events as they happen: "
            "`/ws/jobs/{job_id}` (the job, then its events until it is final) and `/ws/events` "
            "(every job's, or one queue's, task's or workflow's steps' with `?queue=`, `?task=`, "
            "`?workflow_id=`); a browser sends its key as the subprotocols `bearer, <key>`."
        ),
        path="/schema",
        render_plugins=render_plugins,
        use_handler_docstrings=True,
        components=Components(security_schemes={BEARER: BEARER_SCHEME}),
        tags=TAGS,
    )


def with_security_scheme(config: OpenAPIConfig) -> None:
    """Add the bearer scheme the routes name to an application's own OpenAPI config."""
    components = config.components if isinstance(config.components, list) else [config.components]
    if not any(BEARER in (c.security_schemes or {}) for c in components):
        config.components = [*components, Components(security_schemes={BEARER: BEARER_SCHEME})]


def media(schema: dict[str, Any], **examples: Any) -> MediaTypeDoc:
    """One media type of a body: its JSON schema and named examples."""
    return MediaTypeDoc(
        schema=schema,  # type: ignore[arg-type]  # a plain JSON Schema dict is written as it is
        examples={name: Example(value=value) for name, value in examples.items()} or None,
    )


def documented(
    body: RequestBody | None = None,
    *,
    examples: dict[str, Any] | None = None,
    answers: dict[int, Any] | None = None,
) -> type[Operation]:
    """``operation_class=`` for a route whose ``body`` Litestar cannot see (the handler reads the
    request itself), whose JSON body is shown with ``examples`` (by name), or whose answers are
    shown with an example each (``answers``, by status)."""

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = body
            if examples and isinstance(self.request_body, RequestBody):
                for content in self.request_body.content.values():
                    content.examples = {name: Example(value=value) for name, value in examples.items()}
            for status, value in (answers or {}).items():
                response = (self.responses or {}).get(str(status))
                if isinstance(response, OpenAPIResponse):
                    for content in (response.content or {}).values():
                        content.examples = {"example": Example(value=value)}

    return DocumentedOperation
