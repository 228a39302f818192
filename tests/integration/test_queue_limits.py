"""Limits across replicas held by the claim itself: a queue's global concurrency and its rate.

The claim of a limited queue (job_claim_limited) takes at most what its limits allow, in the
queue's turn; the claim of a queue without limits refuses a limited one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from skiplock.queue import Engine
from skiplock.queue._statements import JOBS, QUEUES
from skiplock.queue.models import QueueLimitsInfo
from tests.conftest import make_settings
from tests.integration.test_metrics import sample, scrape
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

CLAIM: list[Any] = ["default", 10, "me", 30.0, None, ["noop"], [], 0]


async def add_jobs(conn: asyncpg.Connection, n: int, queue: str = "default") -> None:
    await conn.execute(
        "INSERT INTO jobs (queue, task) SELECT $1, 'noop' FROM generate_series(1, $2)", queue, n
    )


async def set_limits(
    conn: asyncpg.Connection,
    queue: str = "default",
    *,
    global_concurrency: int | None = None,
    rate: tuple[int, float] | None = None,
) -> None:
    count, period = rate if rate is not None else (None, None)
    await conn.execute(
        QUEUES.queue_set_limits,
        queue,
        None,
        global_concurrency,
        count,
        period,
        False,
        True,
        True,
        None,
        None,
        None,
        False,
        False,
    )


async def claimed(conn: asyncpg.Connection, *args: Any) -> list[asyncpg.Record]:
    return [r for r in await conn.fetch(JOBS.job_claim_limited, *(args or CLAIM)) if r["id"] is not None]


async def test_claim_of_a_queue_with_a_global_concurrency_takes_only_the_free_places(
    tx: asyncpg.Connection,
) -> None:
    await add_jobs(tx, 10)
    await set_limits(tx, global_concurrency=3)
    assert len(await claimed(tx)) == 3
    assert await claimed(tx) == []
    await tx.execute(
        "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL WHERE state = 'running' "
        "AND id = (SELECT min(id) FROM jobs WHERE state = 'running')"
    )
    assert len(await claimed(tx)) == 1


async def test_claim_of_a_queue_without_limits_refuses_a_limited_one(tx: asyncpg.Connection) -> None:
    await add_jobs(tx, 5)
    await set_limits(tx, global_concurrency=3)
    assert await tx.fetch(JOBS.job_claim_many, *CLAIM) == []
    await set_limits(tx)  # cleared
    assert len(await tx.fetch(JOBS.job_claim_many, *CLAIM)) == 5


async def test_rate_limited_claim_says_when_the_budget_allows_the_next_start(tx: asyncpg.Connection) -> None:
    await add_jobs(tx, 10)
    await set_limits(tx, rate=(4, 60.0))
    first = await claimed(tx, "default", 3, *CLAIM[2:])
    assert len(first) == 3
    rows = await tx.fetch(JOBS.job_claim_limited, *CLAIM)
    assert [r["id"] is not None for r in rows] == [True]
    assert rows[0]["budget"] == 1
    held = await tx.fetch(JOBS.job_claim_limited, *CLAIM)
    assert [r["id"] for r in held] == [None]
    assert held[0]["budget"] == 0
    oldest = first[0]["started_at"]
    assert held[0]["next_at"] == oldest + timedelta(seconds=60)
    starts = await tx.fetchval("SELECT starts FROM queues WHERE name = 'default'")
    assert len(starts) == 4


async def test_claims_from_three_connections_at_once_never_exceed_the_global_concurrency(dsn: str) -> None:
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        await add_jobs(conns[0], 300)
        await set_limits(conns[0], global_concurrency=5)
        for _ in range(20):
            await asyncio.gather(*(c.fetch(JOBS.job_claim_limited, *CLAIM) for c in conns))
            assert await conns[0].fetchval("SELECT count(*) FROM jobs WHERE state = 'running'") == 5
            await conns[0].execute(
                "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL "
                "WHERE id IN (SELECT id FROM jobs WHERE state = 'running' ORDER BY random() LIMIT 2)"
            )
    finally:
        for c in conns:
            await c.close()


async def enqueue(
    conn: asyncpg.Connection, n: int, task: str, args: dict[str, Any], queue: str = "lim"
) -> None:
    await conn.execute(
        "INSERT INTO jobs (queue, task, args) SELECT $1, $2, $3::jsonb FROM generate_series(1, $4)",
        queue,
        task,
        args,
        n,
    )


@pytest.mark.slow
async def test_three_worker_processes_never_run_more_than_the_global_concurrency(
    dsn: str, db: asyncpg.Connection
) -> None:
    await set_limits(db, "lim", global_concurrency=5)
    await enqueue(db, 150, "wait", {"seconds": 0.05})
    workers = [start_worker(dsn, queues="lim", concurrency="10") for _ in range(3)]
    samples: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while await db.fetchval("SELECT count(*) < 150 FROM jobs WHERE state = 'succeeded'"):
            samples.append(await db.fetchval("SELECT count(*) FROM jobs WHERE state = 'running'"))
            assert time.monotonic() < deadline, await db.fetch("SELECT state, count(*) FROM jobs GROUP BY 1")
            await asyncio.sleep(0.01)  # sampled every 10 ms through the run
    finally:
        for worker in workers:
            assert stop_worker(worker) == 0
    assert max(samples) == 5, samples  # reached, never passed
    # A freed place is taken at once, not at a poll (0.5 s here): 150 runs of 50 ms, 5 at a time,
    # take 1.5 s; claimed only after polls, they took over 7 s.
    span = await db.fetchval("SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs")
    assert span < 4, span


@pytest.mark.slow
async def test_rate_limit_across_three_worker_processes_holds_in_every_window(
    dsn: str, db: asyncpg.Connection
) -> None:
    # 50/s over 8 s (the issue asks 20 s; 8 keeps the suite fast and has 6 full seconds to judge).
    await set_limits(db, "lim", rate=(50, 1.0))
    await enqueue(db, 600, "noop", {})
    workers = [start_worker(dsn, queues="lim", concurrency="20") for _ in range(3)]
    try:
        await wait_until(
            lambda: db.fetchval("SELECT count(*) > 0 FROM jobs WHERE started_at IS NOT NULL"), 30
        )
        first = await db.fetchval("SELECT min(started_at) FROM jobs")
        await wait_until(lambda: db.fetchval("SELECT now() > $1::timestamptz + interval '8 s'", first), 15)
    finally:
        for worker in workers:
            assert stop_worker(worker) == 0
    starts = [
        r[0] for r in await db.fetch("SELECT started_at FROM jobs WHERE started_at IS NOT NULL ORDER BY 1")
    ]
    second = timedelta(seconds=1)
    for at in starts:  # no window of one second holds more than 50
        assert sum(1 for s in starts if at <= s < at + second) <= 50, at
    per_second = [
        sum(1 for s in starts if first + k * second <= s < first + (k + 1) * second) for k in range(8)
    ]
    assert all(45 <= n <= 50 for n in per_second[1:7]), per_second
    assert await db.fetchval("SELECT max(attempts) FROM jobs") == 1  # none claimed and put back
    assert (
        await db.fetchval("SELECT count(DISTINCT lease_owner) FROM jobs WHERE lease_owner IS NOT NULL") <= 3
    )


@pytest.mark.slow
async def test_runtime_patch_of_a_limit_takes_effect_on_every_process_within_a_second(
    dsn: str, db: asyncpg.Connection, api: AsyncTestClient[Any]
) -> None:
    await enqueue(db, 60, "wait", {"seconds": 30})
    # Polls 5 s apart: what reaches them within the second is the notification.
    workers = [start_worker(dsn, queues="lim:1", concurrency="10", poll_interval_s="5") for _ in range(3)]
    try:
        running = "SELECT count(*) FROM jobs WHERE state = 'running' AND queue = 'lim'"
        await wait_until(lambda: db.fetchval(f"SELECT ({running}) = 3"), 30)
        assert (await api.patch("/queues/lim", json={"concurrency": 3})).status_code == 200
        patched = time.monotonic()
        await wait_until(lambda: db.fetchval(f"SELECT ({running}) = 9"), 5, 0.01)
        assert time.monotonic() - patched < 1.0
        per_owner = await db.fetch(
            "SELECT lease_owner, count(*) FROM jobs WHERE state = 'running' GROUP BY 1"
        )
        assert sorted(r[1] for r in per_owner) == [3, 3, 3]
        # A global limit set at runtime holds back every process within the second too.
        response = await api.patch("/queues/lim", json={"concurrency": 10, "global_concurrency": 9})
        assert response.status_code == 200
        await asyncio.sleep(1.0)
        assert await db.fetchval(running) == 9
    finally:
        for worker in workers:
            stop_worker(worker)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"concurrency": -1}, "concurrency"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2.5}, "concurrency"),
        ({"global_concurrency": -3}, "global_concurrency"),
        ({"global_concurrency": 1.5}, "global_concurrency"),
        ({"rate_limit": "100/fortnight"}, "rate_limit"),
        ({"rate_limit": "1.5/second"}, "rate_limit"),
        ({"rate_limit": "0/second"}, "rate_limit"),
        ({"rate_limit": "100"}, "rate_limit"),
        ({"concurrency": 2, "burst": 3}, "burst"),
    ],
)
async def test_bad_limits_are_a_422_naming_the_field_and_store_nothing(
    api: AsyncTestClient[Any], db: asyncpg.Connection, body: dict[str, Any], field: str
) -> None:
    response = await api.patch("/queues/lim", json={"global_concurrency": 4, **body})
    assert response.status_code == 422, response.text
    assert field in response.text
    assert await db.fetchval("SELECT count(*) FROM queues") == 0


async def test_limits_are_kept_shown_and_cleared_by_null(api: AsyncTestClient[Any]) -> None:
    none = {"key_concurrency": None, "key_rate_limit": None}
    response = await api.patch("/queues/lim", json={"global_concurrency": 4, "rate_limit": "100/minute"})
    assert response.status_code == 200, response.text
    assert response.json()["limits"] == {
        "concurrency": None,
        "global_concurrency": 4,
        "rate_limit": "100/minute",
        **none,
    }
    response = await api.patch("/queues/lim", json={"rate_limit": None, "concurrency": 2})
    cleared = {"concurrency": 2, "global_concurrency": 4, "rate_limit": None, **none}
    assert response.json()["limits"] == cleared
    listed = {q["name"]: q for q in (await api.get("/queues")).json()}
    assert listed["lim"]["limits"] == cleared


async def test_metrics_show_the_limits_set(api: AsyncTestClient[Any]) -> None:
    await api.patch("/queues/lim", json={"global_concurrency": 4, "rate_limit": "100/minute"})
    await api.get("/queues")  # the overview the gauges reuse may be up to 5 s old: read it afresh
    text = await scrape(api)
    assert sample(text, "skiplock_queue_limit", queue="lim", kind="global_concurrency") == 4
    assert sample(text, "skiplock_queue_limit", queue="lim", kind="rate_limit") == 100
    assert sample(text, "skiplock_queue_limit", queue="lim", kind="rate_period_seconds") == 60
    assert not [line for line in text.splitlines() if 'kind="concurrency"' in line and 'queue="lim"' in line]


async def test_limits_declared_in_the_settings_are_written_unless_set_at_runtime(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    declared = make_settings(dsn, queues=["lim:2:global=3:rate=100/minute", "other"])
    async with Engine(declared, registry, dsn) as engine:
        limits = {q.name: q.limits for q in await engine.client.queues()}
        assert limits["lim"] == QueueLimitsInfo(global_concurrency=3, rate_limit="100/minute")
        await engine.client.set_limits("lim", {"global_concurrency": 7})
    async with Engine(declared, registry, dsn) as engine:  # a restart keeps the runtime value
        limits = {q.name: q.limits for q in await engine.client.queues()}
        assert limits["lim"] == QueueLimitsInfo(global_concurrency=7, rate_limit="100/minute")
    assert await db.fetchval("SELECT count(*) FROM queues WHERE name = 'other'") == 0
