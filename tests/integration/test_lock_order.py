"""Writers of several running jobs lock their rows in one order (by id), so the heartbeat, event
writes and outcome writes of the same jobs wait for each other but never deadlock: a deadlock
makes the heartbeat wait out deadlock_timeout, long enough for a short lease's runs to be fenced."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from skiplock.db import connect
from skiplock.queue._statements import EVENTS, JOBS

OWNER = "me"
JOBS_N = 40
ROUNDS = 150


async def _heartbeats(conn: asyncpg.Connection, ids: list[int], rng: random.Random) -> None:
    for _ in range(ROUNDS):
        batch = rng.sample(ids, len(ids))
        await conn.fetch(JOBS.job_heartbeat, batch, OWNER, 30.0, [1] * len(batch), 0)


async def _event_writes(conn: asyncpg.Connection, ids: list[int], rng: random.Random) -> None:
    for _ in range(ROUNDS):
        batch = rng.sample(ids, len(ids))
        await conn.execute(
            EVENTS.event_write_many,
            batch,
            ["progress"] * len(batch),
            ['{"fraction": 0.5}'] * len(batch),
            [1] * len(batch),
            OWNER,
        )


async def _completer_writes(conn: asyncpg.Connection, ids: list[int], rng: random.Random) -> None:
    """The completer's transaction: rows locked in id order, then events, then another statement
    on the same rows (the heartbeat's renewal stands in for the outcome, which would end the runs)."""
    for _ in range(ROUNDS):
        batch = rng.sample(ids, len(ids))
        async with conn.transaction():
            await conn.execute(JOBS.job_lock_rows, sorted(batch), 0)
            await conn.execute(
                EVENTS.event_write_many,
                batch,
                ["log"] * len(batch),
                ['{"message": "hi"}'] * len(batch),
                [1] * len(batch),
                OWNER,
            )
            await conn.fetch(JOBS.job_heartbeat, batch[::-1], OWNER, 30.0, [1] * len(batch), 0)


async def test_heartbeat_event_and_outcome_writes_of_the_same_jobs_never_deadlock(
    dsn: str, db: asyncpg.Connection
) -> None:
    rows = await db.fetch(
        "INSERT INTO jobs (task, state, attempts, lease_owner, lease_expires_at, started_at)"
        " SELECT 'noop', 'running', 1, $1, now() + interval '30 s', now() FROM generate_series(1, $2)"
        " RETURNING id",
        OWNER,
        JOBS_N,
    )
    ids = [r["id"] for r in rows]
    conns = [await connect(dsn) for _ in range(3)]
    try:
        rng = random.Random(7)
        await asyncio.gather(
            _heartbeats(conns[0], ids, random.Random(rng.random())),
            _event_writes(conns[1], ids, random.Random(rng.random())),
            _completer_writes(conns[2], ids, random.Random(rng.random())),
        )  # a deadlock raises DeadlockDetectedError out of one of them
    finally:
        for conn in conns:
            await conn.close()
    written = await db.fetchval("SELECT count(*) FROM job_events WHERE job_id = ANY($1)", ids)
    assert written == 2 * ROUNDS * JOBS_N
