"""The OpenAPI document (/schema/openapi.json) describes every route as it behaves: a summary, a
description and tags; the bearer scheme on each route that takes a key; the success statuses the
handler returns and no other; the body a handler reads; the error answers in the error body's
shape. A route added without them fails here, with what to add."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.response import ServerSentEvent
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from litestar.utils.helpers import unwrap_partial

from skiplock.api.openapi import BEARER
from skiplock.api.security import PUBLIC
from skiplock.app import create_app
from skiplock.settings import Settings

#: The error body's schema, and /health's and /ready's (they answer 503 with their checks).
ERROR_SCHEMAS = {"#/components/schemas/ErrorBody", "#/components/schemas/Health"}
#: What a handler calls when it reads the body itself (Litestar documents only a ``data`` parameter).
BODY_READS = ("request.body(", "request.stream(", "request.json(", "request.form(")

Operation = tuple[str, str, HTTPRouteHandler, dict[str, Any]]


@pytest.fixture(scope="module")
def app() -> Litestar:
    # Never connected to: the schema is served without the lifespan, which starts the engine.
    return create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/unused", task_modules=[]))


@pytest.fixture(scope="module")
def schema(app: Litestar) -> dict[str, Any]:
    response = TestClient(app).get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def operations(app: Litestar, schema: dict[str, Any]) -> Iterator[Operation]:
    """Every HTTP handler in the schema with its operation, as ``METHOD /path``."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method == "OPTIONS" or not handler.resolve_include_in_schema():
                continue
            operation = schema["paths"][route.path_format][method.lower()]
            yield f"{method} {route.path_format}", handler.handler_name, handler, operation


def source_of(handler: HTTPRouteHandler) -> str:
    return textwrap.dedent(inspect.getsource(unwrap_partial(handler.fn)))


def returned_statuses(handler: HTTPRouteHandler) -> set[int]:
    """The statuses the handler answers with: those it gives ``Response(..., status_code=…)``
    (a constant, a module-level name, or ``A if … else B``), else its route's status_code."""
    fn = unwrap_partial(handler.fn)
    found: set[int] = set()

    def values(node: ast.expr) -> set[int]:
        if isinstance(node, ast.IfExp):
            return values(node.body) | values(node.orelse)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return {node.value}
        if isinstance(node, ast.Name) and isinstance(fn.__globals__.get(node.id), int):
            return {fn.__globals__[node.id]}
        raise AssertionError(f"{handler.handler_name}: cannot read status_code={ast.unparse(node)}")

    for node in ast.walk(ast.parse(source_of(handler))):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Response"):
            for keyword in node.keywords:
                if keyword.arg == "status_code":
                    found |= values(keyword.value)
    return found or {handler.status_code}


def test_every_operation_has_a_summary_a_description_and_a_tag(app: Litestar, schema: dict[str, Any]) -> None:
    problems = []
    for where, name, handler, operation in operations(app, schema):
        if not handler.summary:
            problems.append(f"{where} ({name}): no summary: add summary='…' to its route decorator")
        if not (operation.get("description") or "").strip():
            problems.append(f"{where} ({name}): no description: give the handler a docstring")
        if not operation.get("tags"):
            problems.append(f"{where} ({name}): no tag: set tags=[…] on its controller or route")
        described = {tag["name"] for tag in schema.get("tags", []) if tag.get("description")}
        for tag in set(operation.get("tags") or []) - described:
            problems.append(
                f"{where} ({name}): its tag {tag!r} has no description: add it to TAGS (api/openapi.py)"
            )
    assert not problems, "\n".join(problems)


def test_routes_that_take_a_key_name_the_bearer_scheme(app: Litestar, schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"][BEARER]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    problems = []
    for where, name, handler, operation in operations(app, schema):
        requirements = operation.get("security") or schema.get("security") or []
        public = bool(handler.opt.get(PUBLIC))
        if public and requirements:
            problems.append(f"{where} ({name}) needs no key but documents security {requirements}")
        if not public:
            if {BEARER: []} not in requirements:
                problems.append(
                    f"{where} ({name}) takes a key but does not say so: set security=NEEDS_KEY "
                    "(skiplock.api.openapi) on its controller or route"
                )
            if not {"401", "403"} <= operation["responses"].keys():
                problems.append(
                    f"{where} ({name}) takes a key but documents no 401/403: responses=error_responses(…)"
                )
    assert not problems, "\n".join(problems)


def test_documented_success_statuses_are_those_the_handler_returns(
    app: Litestar, schema: dict[str, Any]
) -> None:
    problems = []
    for where, name, handler, operation in operations(app, schema):
        documented = {int(code) for code in operation["responses"] if 200 <= int(code) < 400}
        returned = {code for code in returned_statuses(handler) if 200 <= code < 400}
        if documented != returned:
            problems.append(
                f"{where} ({name}) documents {sorted(documented)} but returns {sorted(returned)}: set "
                "status_code= to what it returns, and document each other success status with "
                "responses={code: ResponseSpec(...)}"
            )
    assert not problems, "\n".join(problems)


def test_error_answers_have_the_error_body(app: Litestar, schema: dict[str, Any]) -> None:
    problems = []
    for where, name, _, operation in operations(app, schema):
        for code, response in operation["responses"].items():
            if int(code) < 400:
                continue
            ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
            if ref not in ERROR_SCHEMAS or not response.get("description"):
                problems.append(
                    f"{where} ({name}): its {code} is not the error body: use "
                    "responses=error_responses(e<code>='when it happens') (skiplock.api.schemas)"
                )
    assert not problems, "\n".join(problems)


def test_a_handler_that_reads_a_body_documents_it(app: Litestar, schema: dict[str, Any]) -> None:
    problems = []
    for where, name, handler, operation in operations(app, schema):
        reads = "data" in handler.parsed_fn_signature.parameters or any(
            call in source_of(handler) for call in BODY_READS
        )
        body = operation.get("requestBody")
        if reads and not (body and body.get("content")):
            problems.append(
                f"{where} ({name}) reads a body it does not document: "
                "operation_class=documented(RequestBody(...)) (skiplock.api.openapi)"
            )
        for media_type, content in (body or {}).get("content", {}).items():
            if not content.get("schema"):
                problems.append(f"{where} ({name}): its {media_type} body has no schema")
    assert not problems, "\n".join(problems)


def test_the_event_stream_is_documented_as_server_sent_events(app: Litestar, schema: dict[str, Any]) -> None:
    streams = [
        (where, operation)
        for where, _, handler, operation in operations(app, schema)
        if handler.parsed_fn_signature.return_type.is_subclass_of(ServerSentEvent)
    ]
    assert [where for where, _ in streams] == ["GET /jobs/{job_id}/stream"]
    for where, operation in streams:
        assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"], where


def test_every_reference_resolves_and_the_main_bodies_have_examples(schema: dict[str, Any]) -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    components = schema["components"]["schemas"]
    dangling = {ref for ref in refs(schema) if ref.removeprefix("#/components/schemas/") not in components}
    assert not dangling
    for path, method in [
        ("/jobs", "post"),
        ("/jobs/batch", "post"),
        ("/workflows", "post"),
        ("/schedules", "post"),
        ("/imports", "post"),
        ("/fetch", "post"),
    ]:
        content = schema["paths"][path][method]["requestBody"]["content"]
        assert any(media.get("examples") for media in content.values()), f"{method.upper()} {path}"
