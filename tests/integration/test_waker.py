"""Enqueues made side by side wake workers with one NOTIFY after their commits, not one each.

A NOTIFY holds a database-wide lock from its transaction's commit to the WAL flush, so inserts
that each notified committed one at a time. The workers here poll only every 30 s: a job that
starts at once was woken by a notification.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from skiplock.queue import Engine
from skiplock.queue._statements import JOBS
from tests.conftest import make_settings
from tests.support.waiting import wait_until

ARGS: tuple[Any, ...] = ("default", "noop", {}, 0, None, None, 3, None, None, None)  # job_insert's $1 … $10
NO_EXPIRY = (None, None, None)  # $12, $13 (after $11, whether the caller wakes later), $14: no key


async def listening(dsn: str) -> tuple[asyncpg.Connection, list[str]]:
    conn = await asyncpg.connect(dsn)
    heard: list[str] = []
    await conn.add_listener("skiplock", lambda *args: heard.append(args[-1]))
    return conn, heard


async def test_an_insert_told_its_caller_wakes_later_sends_no_notify(
    dsn: str, db: asyncpg.Connection
) -> None:
    listener, heard = await listening(dsn)
    try:
        await db.fetchrow(JOBS.job_insert, *ARGS, True, *NO_EXPIRY)
        await db.execute("SELECT pg_sleep(0.2)")  # a notification is delivered by then
        assert heard == []
        await db.fetchrow(JOBS.job_insert, *ARGS, False, *NO_EXPIRY)
        await wait_until(lambda: heard == ["queued:default"], 5)
        async with db.transaction():  # the setting is the transaction's: the next one notifies
            await db.fetchrow(JOBS.job_insert, *ARGS, True, *NO_EXPIRY)
        await db.fetchrow(JOBS.job_insert, *ARGS, False, *NO_EXPIRY)
        await wait_until(lambda: heard == ["queued:default"] * 2, 5)
    finally:
        await listener.close()


async def test_side_by_side_enqueues_start_at_once_with_fewer_notifications(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    count = 60
    listener, heard = await listening(dsn)
    settings = make_settings(dsn, poll_interval_s=30.0, pool_max_size=10)
    try:
        async with Engine(settings, registry, dsn) as engine:
            for _ in range(3):  # bursts, each after the last one ran
                jobs = await asyncio.gather(*(engine.client.enqueue("noop") for _ in range(count)))
                ids = [job.id for job in jobs]
                await wait_until(
                    lambda ids=ids: db.fetchval(
                        "SELECT count(*) = $2 FROM jobs WHERE id = ANY($1) AND state = 'succeeded'",
                        ids,
                        len(ids),
                    ),
                    5,
                )
    finally:
        await listener.close()
    wakes = [n for n in heard if n.startswith("queued:")]
    print(f"\n{3 * count} side-by-side enqueues, {len(wakes)} wake-ups")
    assert 3 <= len(wakes) < 3 * count // 2
