"""/ready tells the truth about the database, and answers in time even when it hangs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import make_settings
from tests.support.faults import backend_pids, frozen_backends, private_postgres
from tests.support.live import app_client
from tests.support.waiting import wait_until


async def status(api: AsyncTestClient[Any], path: str) -> int:
    return (await api.get(path)).status_code


async def test_ready_answers_503_within_its_limit_while_the_database_hangs_then_200() -> None:
    async with private_postgres() as pg:
        settings = make_settings(pg.dsn, worker=False, scheduler=False, pool_min_size=1, pool_max_size=2)
        async with app_client(settings) as api:
            assert await status(api, "/ready") == 200
            pids = await backend_pids(pg.admin_dsn, "skiplock", application_name="skiplock")
            assert pids
            with frozen_backends(pids):
                started = time.monotonic()
                answer = await asyncio.wait_for(api.get("/ready"), 30)
                took_s = time.monotonic() - started
                health = await status(api, "/health")
            assert answer.status_code == 503
            assert answer.json()["checks"]["database"] is False
            assert took_s < 5
            assert health == 200
            await wait_until(lambda: _is(status(api, "/ready"), 200), 5, 0.1)


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_ready_on_a_schema_a_newer_release_migrated_further_and_not_on_one_that_lacks_its_own(
    dsn: str, db: Any
) -> None:
    """In a rolling deploy the previous release's replicas stay ready once the first new one has
    migrated; a schema behind this release is not ready."""
    settings = make_settings(dsn, worker=False, scheduler=False)
    async with app_client(settings) as api:
        await db.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'next_release')")
        ready = await api.get("/ready")
        assert (ready.status_code, ready.json()["checks"]["migrations"]) == (200, True)
        await db.execute("DELETE FROM schema_migrations WHERE version = 1")
        behind = await api.get("/ready")
        assert (behind.status_code, behind.json()["checks"]["migrations"]) == (503, False)
