"""/metrics shows a sick database: the oldest open transaction's age and live and dead rows per
engine table, read from PostgreSQL's statistics at most every few seconds, and stale (not failing)
while the database is down."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from skiplock.db import connect
from tests.conftest import make_settings
from tests.support.faults import private_postgres
from tests.support.live import app_client
from tests.support.serving import sample
from tests.support.waiting import wait_until

Client = AsyncTestClient[Any]


async def scrape(api: Client) -> str:
    response = await api.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_an_open_transaction_shows_as_the_oldest_transaction_age(api: Client, dsn: str) -> None:
    holder = await connect(dsn)
    try:
        await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")

        async def aged() -> float:
            return sample(await scrape(api), "skiplock_db_oldest_transaction_age_seconds")

        held: float = await wait_until(aged, 15, 0.2)
        await holder.execute("COMMIT")

        async def younger() -> bool:
            return await aged() < held  # the next read (at most 5 s later) no longer sees it

        await wait_until(younger, 15, 0.2)
    finally:
        await holder.close()


async def test_live_and_dead_rows_per_engine_table(api: Client, db: asyncpg.Connection) -> None:
    # records: a table nothing else reads meanwhile (a read may prune dead rows and lower the count)
    await db.execute(
        "INSERT INTO records (source, external_id, payload)"
        " SELECT 's', n::text, '{}' FROM generate_series(1, 40) AS n"
    )
    await db.execute("DELETE FROM records WHERE external_id::int <= 15")
    await db.execute("SELECT pg_stat_force_next_flush()")  # report the counts now, not when idle

    async def counted() -> str | None:
        text = await scrape(api)
        dead = sample(text, "skiplock_db_dead_tuples", table="records")
        live = sample(text, "skiplock_db_live_tuples", table="records")
        return text if (live, dead) == (25, 15) else None

    text = await wait_until(counted, 20, 0.2)
    assert 'skiplock_db_live_tuples{table="jobs"}' in text
    assert 'table="test_runs"' not in text  # only the engine's own tables


async def test_database_gauges_stay_stale_while_the_database_is_down() -> None:
    async with private_postgres() as pg:
        settings = make_settings(pg.dsn, worker=False, scheduler=False)
        async with app_client(settings) as api:
            holder = await connect(pg.dsn)
            await holder.execute("BEGIN; SELECT 1")

            async def aged() -> float:
                return sample(await scrape(api), "skiplock_db_oldest_transaction_age_seconds")

            await wait_until(aged, 15, 0.2)
            before = await scrape(api)
            holder.terminate()
            await asyncio.to_thread(pg.stop)
            during = [await scrape(api) for _ in range(3)]
            await asyncio.to_thread(pg.start)
    for text in during:
        for name, labels in [
            ("skiplock_db_oldest_transaction_age_seconds", {}),
            ("skiplock_db_live_tuples", {"table": "jobs"}),
        ]:
            assert sample(text, name, **labels) == sample(before, name, **labels)
    assert 'skiplock_db_live_tuples{table="jobs"}' in during[-1]
