"""SKIPLOCK_READ_DATABASE_URL on a real streaming standby of a private server: the lists (GET /jobs
and the dashboard's) are read from it while writes and a job's own read go to the primary; a
standby that lags past SKIPLOCK_READ_MAX_LAG_S, or is stopped, leaves the reads to the primary."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from skiplock.db.admin import with_database
from tests.conftest import make_settings
from tests.support.faults import private_postgres, streaming_replica
from tests.support.live import app_client
from tests.support.serving import sample
from tests.support.waiting import wait_until

MAX_LAG_S = 5.0  # margin for the checks made while replay is paused, on a loaded machine


async def listed(api: AsyncTestClient[Any]) -> set[int]:
    response = await api.get("/jobs", params={"limit": 100})
    assert response.status_code == 200
    return {item["id"] for item in response.json()["items"]}


async def on_dashboard(api: AsyncTestClient[Any], job_id: int) -> bool:
    response = await api.get("/ui/jobs")
    assert response.status_code == 200
    return f"/ui/jobs/{job_id}" in response.text


async def fallbacks(api: AsyncTestClient[Any], reason: str) -> float:
    return sample((await api.get("/metrics")).text, "skiplock_read_fallbacks_total", reason=reason)


async def readers(admin_dsn: str) -> int:
    """Sessions of the process's read pool on this server."""
    conn = await asyncpg.connect(with_database(admin_dsn, "postgres"))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'skiplock-reads'"
        )
    finally:
        await conn.close()
    return count


async def test_lists_are_read_from_the_standby_and_from_the_primary_when_it_lags_or_stops() -> None:
    async with private_postgres() as primary, streaming_replica(primary) as standby:
        settings = make_settings(
            primary.dsn, worker=False, read_database_url=standby.dsn, read_max_lag_s=MAX_LAG_S
        )
        async with app_client(settings) as api:
            first = (await api.post("/jobs", json={"task": "echo", "args": {"n": 1}})).json()["id"]
            await wait_until(lambda: _contains(api, first), 10, 0.1)  # replayed on the standby
            assert await readers(standby.admin_dsn) > 0
            assert await readers(primary.admin_dsn) == 0

            # Replay paused: the standby no longer sees new jobs, the primary does.
            control = await asyncpg.connect(standby.admin_dsn)
            try:
                await control.execute("SELECT pg_wal_replay_pause()")
                second = (await api.post("/jobs", json={"task": "echo", "args": {"n": 2}})).json()["id"]
                assert (await api.get(f"/jobs/{second}")).status_code == 200  # read-your-writes: primary
                assert second not in await listed(api)  # the list: the standby's
                assert not await on_dashboard(api, second)
                assert await on_dashboard(api, first)
                # Past the lag bound the primary serves the lists.
                await wait_until(lambda: _contains(api, second), MAX_LAG_S + 10, 0.2)
                assert await on_dashboard(api, second)
                assert await fallbacks(api, "lagging") > 0
                await control.execute("SELECT pg_wal_replay_resume()")
            finally:
                await control.close()

            async def caught_up() -> bool:  # the standby read from again
                await listed(api)
                return sample((await api.get("/metrics")).text, "skiplock_read_replica_lag_seconds") == 0

            await wait_until(caught_up, 10, 0.2)
            lagging = await fallbacks(api, "lagging")

            standby.stop()  # down: the lists go on from the primary
            third = (await api.post("/jobs", json={"task": "echo", "args": {"n": 3}})).json()["id"]
            assert {first, second, third} <= await listed(api)
            assert await on_dashboard(api, third)
            assert await fallbacks(api, "down") > 0
            assert await fallbacks(api, "lagging") == lagging


async def _contains(api: AsyncTestClient[Any], job_id: int) -> bool:
    return job_id in await listed(api)
