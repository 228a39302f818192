"""Every claim writes the worker that claimed the job (its lease owner) into the attempt's running
event, so the job page's timeline can say which process ran each attempt."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from skiplock.queue._statements import JOBS
from tests.integration.test_key_limits import add_keyed, set_key_limits

CLAIM = [100, "worker-a", 30.0, None, ["noop"], [], 0]


async def workers_of_running_events(conn: asyncpg.Connection, queue: str) -> list[str | None]:
    rows = await conn.fetch(
        "SELECT e.data ->> 'worker' FROM job_events e JOIN jobs j ON j.id = e.job_id"
        " WHERE j.queue = $1 AND e.kind = 'state' AND e.data ->> 'state' = 'running' ORDER BY j.id",
        queue,
    )
    return [r[0] for r in rows]


async def test_each_claim_statement_names_its_worker_in_the_running_event(tx: asyncpg.Connection) -> None:
    await add_keyed(tx, None, 2, queue="plain")
    assert len(await tx.fetch(JOBS.job_claim_many, "plain", *CLAIM)) == 2
    assert await workers_of_running_events(tx, "plain") == ["worker-a", "worker-a"]

    await add_keyed(tx, None, 1, queue="after")
    start = datetime(2000, 1, 1, tzinfo=UTC)
    assert len(await tx.fetch(JOBS.job_claim_after, "after", *CLAIM, 0, start, 0)) == 1
    assert await workers_of_running_events(tx, "after") == ["worker-a"]

    await set_key_limits(tx, "limited", global_concurrency=5)
    await add_keyed(tx, None, 1, queue="limited")
    rows = await tx.fetch(JOBS.job_claim_limited, "limited", *CLAIM)
    assert [r["id"] for r in rows if r["id"] is not None]
    assert await workers_of_running_events(tx, "limited") == ["worker-a"]

    await set_key_limits(tx, "keyed", concurrency=5)
    await add_keyed(tx, "k", 1, queue="keyed")
    rows = await tx.fetch(JOBS.job_claim_keyed, "keyed", *CLAIM)
    assert [r["id"] for r in rows if r["id"] is not None]
    assert await workers_of_running_events(tx, "keyed") == ["worker-a"]
