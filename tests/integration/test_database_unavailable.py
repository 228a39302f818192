"""Every request that needs a database that is not there answers 503 with Retry-After, never 500;
/health and /metrics still answer. A statement the server refuses for its values is not an outage:
it stays a 500, without its details."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from skiplock.api.errors import DRIVER_ERRORS, database_error_handler
from tests.conftest import make_settings
from tests.support.faults import private_postgres
from tests.support.live import app_client

NEEDS_THE_DATABASE = [
    ("POST", "/jobs", {"task": "noop"}),
    ("POST", "/jobs/batch", [{"task": "noop"}]),
    ("GET", "/jobs", None),
    ("GET", "/jobs/1", None),
    ("GET", "/jobs/1/events", None),
    ("POST", "/jobs/1/cancel", None),
    ("GET", "/queues", None),
    ("POST", "/queues/default/pause", None),
    ("GET", "/failures", None),
    ("GET", "/schedules", None),
    ("POST", "/schedules", {"name": "n", "cron": "0 3 * * *", "task": "noop", "args": {}}),
    ("GET", "/records", None),
    ("GET", "/pages?url=https://example.org/", None),
    ("GET", "/imports", None),
    ("GET", "/imports/1", None),
]


async def test_every_route_that_needs_the_database_answers_503_with_retry_after_while_it_is_down(
    registry: Any,
) -> None:
    async with private_postgres() as pg:
        settings = make_settings(pg.dsn, worker=False, scheduler=False)
        async with app_client(settings, registry) as api:
            assert (await api.post("/jobs", json={"task": "noop"})).status_code == 201
            await asyncio.to_thread(pg.stop)
            try:
                answers = {}
                for method, path, body in NEEDS_THE_DATABASE:
                    response = await api.request(method, path, json=body)
                    answers[f"{method} {path}"] = (
                        response.status_code,
                        response.headers.get("retry-after"),
                        response.json()["detail"],
                    )
                health = (await api.get("/health")).status_code
                scrape = (await api.get("/metrics")).status_code
            finally:
                await asyncio.to_thread(pg.start)
    wrong = {route: got for route, got in answers.items() if got[:2] != (503, "2")}
    assert wrong == {}
    assert {detail for _, _, detail in answers.values()} == {"the database is unavailable; retry shortly"}
    assert (health, scrape) == (200, 200)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (asyncpg.CannotConnectNowError("the database system is starting up"), 503),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), 503),
        (asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"), 503),
        (asyncpg.InterfaceError("pool is closed"), 503),
        (ConnectionRefusedError(111, "Connection refused"), 503),
        (TimeoutError(), 503),
        (asyncpg.UniqueViolationError("duplicate key value violates unique constraint"), 500),
        (asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence"), 500),
    ],
)
async def test_driver_errors_map_to_503_when_the_database_is_away_else_500(
    error: Exception, status: int
) -> None:
    @get("/boom")
    async def boom() -> None:
        raise error

    app = Litestar([boom], exception_handlers=dict.fromkeys(DRIVER_ERRORS, database_error_handler))
    async with AsyncTestClient(app) as client:
        response = await client.get("/boom")
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert body["status_code"] == status
    assert "duplicate" not in body["detail"]  # no server details
    assert "Unicode" not in body["detail"]
    assert ("retry-after" in response.headers) == (status == 503)
