"""A statement that fails inside a handler answers with a JSON error naming what happened and the
request's id: a statement stopped by a time limit or a lock wait is "retry shortly" (503 with
Retry-After), one the server refused for another reason a 500. Real failures, provoked in the
test's own database."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from skiplock.db.pool import database_error, is_unavailable
from skiplock.errors import (
    DatabaseError,
    DatabaseUnavailableError,
    StatementRefusedError,
    StatementStoppedError,
)
from skiplock.queue._statements import JOBS
from tests.conftest import make_settings
from tests.support.live import app_client, live_server
from tests.support.waiting import wait_until


async def test_a_statement_that_waits_past_the_lock_timeout_is_a_503_to_retry(
    dsn: str, registry: Any
) -> None:
    settings = make_settings(dsn, worker=False, scheduler=False, db_lock_timeout_s=0.05)
    async with app_client(settings, registry) as api:
        job = (await api.post("/jobs", json={"task": "noop"})).json()
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job["id"])
                response = await api.post(f"/jobs/{job['id']}/cancel", headers={"x-request-id": "lock-1"})
        finally:
            await holder.close()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.headers["x-request-id"] == "lock-1"
    body = response.json()
    assert body["status_code"] == 503
    assert "retry" in body["detail"]
    assert "lock" in body["detail"]
    assert body["extra"] == {"error": "LockNotAvailableError", "sqlstate": "55P03", "request_id": "lock-1"}


async def test_a_statement_past_the_statement_timeout_is_a_503_to_retry(dsn: str, registry: Any) -> None:
    settings = make_settings(dsn, worker=False, scheduler=False, db_statement_timeout_s=0.1)
    async with app_client(settings, registry) as api:
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
                response = await api.get("/jobs", headers={"x-request-id": "slow-1"})
        finally:
            await holder.close()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.headers["x-request-id"] == "slow-1"
    body = response.json()
    assert "time limit" in body["detail"]
    assert body["extra"] == {"error": "QueryCanceledError", "sqlstate": "57014", "request_id": "slow-1"}


async def test_a_handlers_connection_terminated_mid_statement_is_a_503_and_the_next_request_passes(
    dsn: str, pg_admin_dsn: str, registry: Any
) -> None:
    settings = make_settings(dsn, worker=False, scheduler=False, db_lock_timeout_s=30)
    async with live_server(settings, list(registry)) as base, httpx.AsyncClient(base_url=base) as api:
        job = (await api.post("/jobs", json={"task": "noop"})).json()
        holder = await asyncpg.connect(dsn)
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            database = await holder.fetchval("SELECT current_database()")
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job["id"])
                cancelling = asyncio.ensure_future(
                    api.post(f"/jobs/{job['id']}/cancel", headers={"x-request-id": "cut-1"}, timeout=20)
                )
                # The handler's statement waits on the row, on a connection of the app's pool:
                # the server ends that backend under it (FATAL 57P01).
                victim = await wait_until(
                    lambda: admin.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE datname = $1 "
                        "AND wait_event_type = 'Lock' AND starts_with($2, query)",
                        database,
                        JOBS.job_cancel,  # (pg_stat_activity keeps its first 1 kB)
                    )
                )
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
                response = await asyncio.wait_for(cancelling, 10)
        finally:
            await admin.close()
            await holder.close()
        after = await api.get(f"/jobs/{job['id']}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.headers["x-request-id"] == "cut-1"
    body = response.json()
    assert body["status_code"] == 503
    assert body["detail"] == "the database is unavailable; retry shortly"
    # The statement's own error (the server's FATAL, or the driver's word for the closed socket,
    # whichever it read first), not the driver's complaint while cleaning up after it.
    assert body["extra"] in (
        {"error": "AdminShutdownError", "sqlstate": "57P01", "request_id": "cut-1"},
        {"error": "ConnectionDoesNotExistError", "sqlstate": "08003", "request_id": "cut-1"},
    )
    # The broken connection was discarded, not lent again; the cancel was not written.
    assert (after.status_code, after.json()["state"]) == (200, "queued")


async def test_a_statement_the_server_refuses_is_a_500_naming_its_error_class_and_request(
    dsn: str, registry: Any
) -> None:
    settings = make_settings(dsn, worker=False, scheduler=False)
    async with app_client(settings, registry) as api:
        conn = await asyncpg.connect(dsn)
        try:
            # A rule of the operator's that refuses every new job: the server's own error, not the
            # request's values.
            await conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'no new jobs today: secret detail'; END $$"
            )
            await conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON jobs EXECUTE FUNCTION refuse()")
        finally:
            await conn.close()
        response = await api.post("/jobs", json={"task": "noop"}, headers={"x-request-id": "refused-1"})
    assert response.status_code == 500
    assert "retry-after" not in response.headers
    assert response.headers["x-request-id"] == "refused-1"
    body = response.json()
    assert body["status_code"] == 500
    assert "secret" not in body["detail"]  # the server's words stay in the log
    assert body["detail"] == "the database refused the statement"
    assert body["extra"] == {"error": "RaiseError", "sqlstate": "P0001", "request_id": "refused-1"}


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), StatementStoppedError),
        (asyncpg.LockNotAvailableError("canceling statement due to lock timeout"), StatementStoppedError),
        (asyncpg.SerializationError("could not serialize access"), StatementStoppedError),
        (asyncpg.DeadlockDetectedError("deadlock detected"), StatementStoppedError),
        (
            asyncpg.AdminShutdownError("terminating connection due to administrator command"),
            DatabaseUnavailableError,
        ),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), DatabaseUnavailableError),
        (ConnectionRefusedError(111, "Connection refused"), DatabaseUnavailableError),
        (TimeoutError(), DatabaseUnavailableError),
        (asyncpg.UniqueViolationError("duplicate key value"), StatementRefusedError),
        (asyncpg.UndefinedTableError('relation "jobs" does not exist'), StatementRefusedError),
        (asyncpg.DataError("invalid input for query argument $1"), StatementRefusedError),
    ],
)
def test_the_db_layer_translates_a_driver_error_by_whether_a_retry_may_pass(
    error: Exception, kind: type[DatabaseError]
) -> None:
    translated = database_error(error)
    assert type(translated) is kind
    assert translated.extra["error"] == type(error).__name__
    assert is_unavailable(translated) == (kind is not StatementRefusedError)
    assert is_unavailable(translated) == is_unavailable(error)
