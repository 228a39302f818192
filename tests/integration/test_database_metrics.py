"""/metrics shows a sick database: what holds back vacuum (the oldest transaction, snapshot and
slot), the NOTIFY queue filling, live and dead rows and the last autovacuum per engine table, read
from PostgreSQL's statistics at most every few seconds, and stale (not failing) while the database
is down; and the pools' waits for a connection."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from skiplock.db import connect, create_pool
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


async def test_an_open_transaction_shows_as_the_oldest_transaction_and_snapshot(
    api: Client, dsn: str, db: asyncpg.Connection
) -> None:
    holder = await connect(dsn)
    try:
        await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        for _ in range(3):  # three transactions since its snapshot
            await db.execute("SELECT pg_current_xact_id()")

        async def aged() -> float:
            return sample(await scrape(api), "skiplock_db_oldest_transaction_age_seconds")

        held: float = await wait_until(aged, 15, 0.2)
        assert sample(await scrape(api), "skiplock_db_oldest_xmin_age_transactions") >= 3
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


async def test_a_listener_in_a_long_transaction_fills_the_notify_queue(api: Client, dsn: str) -> None:
    listener = await connect(dsn)
    notifier = await connect(dsn)
    try:
        await listener.execute("LISTEN skiplock_test_backlog")
        await listener.execute("BEGIN; SELECT 1")  # reads no notification until it ends
        # About 8 MB (of an 8 GB queue): distinct payloads, so none are folded into one.
        await notifier.execute(
            "SELECT pg_notify('skiplock_test_backlog', n || repeat('x', 7900))"
            " FROM generate_series(1, 1000) AS n"
        )
        usage = sample(await scrape(api), "skiplock_db_notify_queue_usage")
        assert 0.0005 <= usage < 0.1
    finally:
        await listener.close()
        await notifier.close()


async def test_a_replication_slot_and_autovacuum_show() -> None:
    settings = {"wal_level": "logical", "autovacuum_naptime": "1"}
    async with private_postgres(settings) as pg:
        conn = await connect(pg.dsn)
        try:
            # A logical slot holds catalog_xmin from its creation until a subscriber reads it.
            await conn.execute("SELECT pg_create_logical_replication_slot('skiplock_test', 'pgoutput')")
            for _ in range(3):
                await conn.execute("SELECT pg_current_xact_id()")
            await conn.execute(
                "ALTER TABLE records"
                " SET (autovacuum_vacuum_threshold = 1, autovacuum_vacuum_scale_factor = 0)"
            )
            await conn.execute(
                "INSERT INTO records (source, external_id, payload)"
                " SELECT 's', n::text, '{}' FROM generate_series(1, 50) AS n"
            )
            await conn.execute("DELETE FROM records")
            await conn.execute("SELECT pg_stat_force_next_flush()")
            async with app_client(make_settings(pg.dsn, worker=False, scheduler=False)) as api:

                async def vacuumed() -> str | None:
                    text = await scrape(api)
                    last = sample(text, "skiplock_db_last_autovacuum_timestamp_seconds", table="records")
                    return text if last > 0 else None

                text = await wait_until(vacuumed, 20, 0.5)
        finally:
            await conn.close()
    assert sample(text, "skiplock_db_replication_slot_xmin_age_transactions") >= 3
    last = sample(text, "skiplock_db_last_autovacuum_timestamp_seconds", table="records")
    assert abs(last - time.time()) < 60
    # A table autovacuum never visited has no sample rather than a made-up time.
    assert 'skiplock_db_last_autovacuum_timestamp_seconds{table="api_keys"}' not in text


async def test_pool_waits_are_counted(dsn: str, api: Client) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        stacks = [AsyncExitStack(), AsyncExitStack()]
        held = [await stack.enter_async_context(pool.acquire()) for stack in stacks]
        assert len(held) == 2
        assert pool.acquire_waits == 0

        async def give_back() -> None:
            await asyncio.sleep(0.3)
            await stacks[0].aclose()

        releasing = asyncio.ensure_future(give_back())
        assert await pool.fetchval("SELECT 1") == 1  # waited for the connection given back
        await releasing
        await stacks[1].aclose()
        assert pool.acquire_waits == 1
        assert pool.acquire_wait_s >= 0.2
        assert await pool.fetchval("SELECT 2") == 2  # a free connection: no wait
        assert (pool.acquire_waits, pool.in_use) == (1, 0)
    finally:
        await pool.close()
    text = await scrape(api)
    assert 'skiplock_db_pool_acquire_waits_total{pool="engine"}' in text
    assert 'skiplock_db_pool_acquire_wait_seconds_total{pool="tasks"}' in text


async def test_the_engine_tables_are_set_for_their_churn(db: asyncpg.Connection) -> None:
    options = {
        r["relname"]: set(r["reloptions"] or ())
        for r in await db.fetch(
            "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])",
            [
                "jobs_live",
                "jobs_done_default",
                "job_events_default",
                "queues",
                "task_registrations",
                "workflows",
            ],
        )
    }
    # jobs is partitioned (migration 0028): the churn is the live table's; history is insert-only.
    assert {"fillfactor=80", "autovacuum_vacuum_scale_factor=0.02"} <= options["jobs_live"]
    assert "autovacuum_vacuum_insert_scale_factor=0.05" in options["jobs_done_default"]
    assert "autovacuum_vacuum_insert_scale_factor=0.05" in options["job_events_default"]
    assert "fillfactor=50" in options["queues"]
    assert "fillfactor=50" in options["task_registrations"]
    assert "fillfactor=80" in options["workflows"]
