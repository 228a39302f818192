"""Per-key limits: a concurrency and a rate per concurrency key value, held across every process
by the claim of a keyed queue (skiplock_claim_keyed), which serves the keys round-robin."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from pydantic import BaseModel

from skiplock.errors import InvalidArgumentsError
from skiplock.queue import Engine
from skiplock.queue._statements import JOBS, QUEUES
from skiplock.queue.client import EnqueueRequest
from skiplock.queue.context import Context
from skiplock.queue.tasks import Task, TaskRegistry, task
from tests.conftest import make_settings
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

CLAIM: list[Any] = ["default", 100, "me", 30.0, None, ["noop"], [], 0]


async def set_key_limits(
    conn: asyncpg.Connection,
    queue: str = "default",
    *,
    concurrency: int | None = None,
    rate: tuple[int, float] | None = None,
    global_concurrency: int | None = None,
) -> None:
    count, period = rate if rate is not None else (None, None)
    await conn.execute(
        QUEUES.queue_set_limits,
        queue,
        None,
        global_concurrency,
        None,
        None,
        False,
        True,
        False,
        concurrency,
        count,
        period,
        True,
        True,
    )


async def add_keyed(
    conn: asyncpg.Connection,
    key: str | None,
    n: int,
    *,
    queue: str = "default",
    task: str = "noop",
    args: dict[str, Any] | None = None,
    priority: int = 0,
) -> None:
    await conn.execute(
        "INSERT INTO jobs (queue, task, args, concurrency_key, priority) "
        "SELECT $1, $2, $3::jsonb, $4, $5 FROM generate_series(1, $6)",
        queue,
        task,
        args or {},
        key,
        priority,
        n,
    )


async def claim(conn: asyncpg.Connection, wanted: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(JOBS.job_claim_keyed, "default", wanted, *CLAIM[2:])


def jobs_of(rows: list[asyncpg.Record]) -> list[int]:
    return [r["id"] for r in rows if r["id"] is not None]


async def keys_of(conn: asyncpg.Connection, ids: list[int]) -> list[str | None]:
    rows = await conn.fetch("SELECT concurrency_key FROM jobs WHERE id = ANY($1) ORDER BY id", ids)
    return [r[0] for r in rows]


async def finish(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute(
        "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL, finished_at = now() "
        "WHERE id = ANY($1)",
        ids,
    )


async def test_one_keys_backlog_never_holds_back_another_keys_job(tx: asyncpg.Connection) -> None:
    await add_keyed(tx, "big", 1000)  # older than every other key's jobs
    for key in "abcdefghi":
        await add_keyed(tx, key, 3)
    await set_key_limits(tx, concurrency=2)
    rows = await claim(tx)
    counts = Counter(await keys_of(tx, jobs_of(rows)))
    assert counts == {key: 2 for key in ["big", *"abcdefghi"]}
    held = await claim(tx)
    assert jobs_of(held) == []
    assert held[0]["held"]  # every key at its limit: claimed again when an outcome is written


async def test_keys_are_served_round_robin_from_where_the_last_claim_ended(tx: asyncpg.Connection) -> None:
    for key in "abc":
        await add_keyed(tx, key, 5)
    await set_key_limits(tx, concurrency=1)
    served: list[set[str | None]] = []
    for _ in range(4):
        ids = jobs_of(await claim(tx, 2))
        served.append(set(await keys_of(tx, ids)))
        await finish(tx, ids)
    assert served == [{"a", "b"}, {"c", "a"}, {"b", "c"}, {"a", "b"}]


async def test_priorities_hold_within_a_key(tx: asyncpg.Connection) -> None:
    await add_keyed(tx, "a", 3, priority=0)
    await add_keyed(tx, "a", 1, priority=5)
    await set_key_limits(tx, concurrency=1)
    ids = jobs_of(await claim(tx))
    assert await tx.fetchval("SELECT priority FROM jobs WHERE id = $1", ids[0]) == 5


async def test_a_key_over_its_rate_stays_queued_unattempted_and_says_when_it_may_start(
    tx: asyncpg.Connection,
) -> None:
    await add_keyed(tx, "a", 5)
    await add_keyed(tx, "b", 5)
    await set_key_limits(tx, rate=(2, 60.0))
    first = await claim(tx)
    assert Counter(await keys_of(tx, jobs_of(first))) == {"a": 2, "b": 2}
    again = await claim(tx)
    assert jobs_of(again) == []
    assert again[0]["next_at"] == first[0]["started_at"] + timedelta(seconds=60)
    assert not again[0]["held"]
    assert await tx.fetchval("SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0") == 6


async def test_jobs_without_a_key_in_a_keyed_queue_are_one_turn_of_the_round_robin(
    tx: asyncpg.Connection,
) -> None:
    await add_keyed(tx, None, 3)
    await add_keyed(tx, "a", 3)
    await set_key_limits(tx, concurrency=1)
    rows = await claim(tx)
    assert Counter(await keys_of(tx, jobs_of(rows))) == {"a": 1, None: 3}


async def test_a_job_without_a_key_is_claimed_within_one_round_while_the_keys_have_room(
    tx: asyncpg.Connection,
) -> None:
    for key in "abc":
        await add_keyed(tx, key, 100)
    await tx.execute(
        "INSERT INTO jobs (queue, task, args, priority, run_at) "
        "VALUES ('default', 'noop', '{}', 100, now() - interval '1 hour')"
    )
    await set_key_limits(tx, concurrency=1000)
    await tx.execute("UPDATE queues SET key_cursor = 'a' WHERE name = 'default'")  # b, c, then it
    served: list[str | None] = []
    for _ in range(4):  # one round: the three keys and the jobs without a key
        ids = jobs_of(await claim(tx, 10))
        assert len(ids) == 10
        served += await keys_of(tx, ids)
    assert None in served


async def test_a_process_that_cannot_run_the_unkeyed_jobs_does_not_hold_them_back_from_others(
    tx: asyncpg.Connection,
) -> None:
    await add_keyed(tx, None, 1)
    await add_keyed(tx, "a", 1)
    await set_key_limits(tx, concurrency=1)
    other = await tx.fetch(JOBS.job_claim_keyed, "default", 10, "other", 30.0, None, ["other"], [], 0)
    assert jobs_of(other) == []
    rows = await claim(tx)  # at once, from a process that runs them
    assert Counter(await keys_of(tx, jobs_of(rows))) == {"a": 1, None: 1}


async def test_a_claim_walks_a_bounded_number_of_keys_and_the_next_continues_after_them(
    tx: asyncpg.Connection,
) -> None:
    keys = [f"k{i:05}" for i in range(20_000)]  # each at its limit, one more queued
    for state in ("running", "queued"):
        await tx.execute(
            "INSERT INTO jobs (queue, task, args, state, concurrency_key) "
            "SELECT 'default', 'noop', '{}', $1, k FROM unnest($2::text[]) AS k",
            state,
            keys,
        )
    await tx.execute("ANALYZE jobs")
    await set_key_limits(tx, concurrency=1)
    cursor = "SELECT key_cursor FROM queues WHERE name = 'default'"
    started = time.monotonic()
    first = await claim(tx, 10)  # 64 turns: the jobs without a key, then 63 keys
    elapsed = time.monotonic() - started
    assert jobs_of(first) == []
    assert first[0]["held"]  # turns left unwalked: claimed again on an outcome or at the poll
    assert await tx.fetchval(cursor) == keys[62]
    await claim(tx, 10)
    assert await tx.fetchval(cursor) == keys[126]
    await tx.execute(
        "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL "
        "WHERE state = 'running' AND concurrency_key = $1",
        keys[127],
    )
    assert await keys_of(tx, jobs_of(await claim(tx, 10))) == [keys[127]]
    assert elapsed < 2.0  # about 10 ms; the 20,000 keys walked took 256 ms


async def test_the_queues_own_limits_hold_over_the_keys(tx: asyncpg.Connection) -> None:
    for key in "abcd":
        await add_keyed(tx, key, 3)
    await set_key_limits(tx, concurrency=2, global_concurrency=3)
    rows = await claim(tx)
    assert len(jobs_of(rows)) == 3
    assert (await claim(tx))[0]["held"]


async def test_claims_that_do_not_hold_per_key_limits_take_nothing_from_a_keyed_queue(
    tx: asyncpg.Connection,
) -> None:
    await add_keyed(tx, "a", 5)
    await set_key_limits(tx, concurrency=1)
    assert await tx.fetch(JOBS.job_claim_many, *CLAIM) == []
    assert [r["id"] for r in await tx.fetch(JOBS.job_claim_limited, *CLAIM)] == [None]
    await set_key_limits(tx)  # cleared: the plain claim takes them again
    assert len(await tx.fetch(JOBS.job_claim_many, *CLAIM)) == 5


class Order(BaseModel):
    customer_id: int
    region: str = "eu"


async def _nothing(ctx: Context, args: Order) -> None:
    return None


def keyed_tasks() -> TaskRegistry:
    return TaskRegistry(
        [
            Task(
                "by_field", _nothing, Order, queue="orders", concurrency_key="customer_id", key_concurrency=2
            ),
            Task("by_function", _nothing, Order, queue="regions", concurrency_key=lambda a: f"{a.region}:x"),
            Task("empty_key", _nothing, Order, queue="regions", concurrency_key=lambda a: ""),
        ]
    )


async def test_the_key_is_computed_at_enqueue_and_kept_on_the_job(dsn: str, db: asyncpg.Connection) -> None:
    async with Engine(make_settings(dsn, worker=False), keyed_tasks(), dsn) as engine:
        job = await engine.client.enqueue("by_field", {"customer_id": 42})
        assert job.concurrency_key == "42"
        other = await engine.client.enqueue("by_function", {"customer_id": 1, "region": "us"})
        assert other.concurrency_key == "us:x"
        with pytest.raises(InvalidArgumentsError, match="concurrency key is empty"):
            await engine.client.enqueue("empty_key", {"customer_id": 1})
        await engine.client.enqueue_many([EnqueueRequest("by_field", {"customer_id": n}) for n in (7, 8)])
    keys = await db.fetch("SELECT concurrency_key FROM jobs ORDER BY id")
    assert [r[0] for r in keys] == ["42", "us:x", "7", "8"]


async def test_a_tasks_per_key_limits_are_written_at_a_workers_start_unless_set(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Engine(make_settings(dsn, queues=["orders"]), keyed_tasks(), dsn) as engine:
        limits = {q.name: q.limits for q in await engine.client.queues()}
        assert limits["orders"].key_concurrency == 2
        await engine.client.set_limits("orders", {"key_concurrency": 5})
    async with Engine(make_settings(dsn, queues=["orders"]), keyed_tasks(), dsn) as engine:
        limits = {q.name: q.limits for q in await engine.client.queues()}
        assert limits["orders"].key_concurrency == 5  # the runtime value outlives the restart


def test_a_key_declaration_that_cannot_work_is_refused_at_declaration() -> None:
    with pytest.raises(ValueError, match="not a field of its args"):
        task("bad_key", args=Order, concurrency_key="customer")
    with pytest.raises(ValueError, match="need a concurrency_key"):
        task("no_key", args=Order, key_concurrency=2)
    with pytest.raises(ValueError, match="key_concurrency"):
        task("zero", args=Order, concurrency_key="customer_id", key_concurrency=0)
    with pytest.raises(ValueError, match="key_rate_limit"):
        task("bad_rate", args=Order, concurrency_key="customer_id", key_rate_limit="3/fortnight")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key_concurrency": -1}, "key_concurrency"),
        ({"key_concurrency": 0}, "key_concurrency"),
        ({"key_concurrency": 1.5}, "key_concurrency"),
        ({"key_concurrency": "2"}, "key_concurrency"),
        ({"global_concurrency": "5"}, "global_concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"key_rate_limit": "5/fortnight"}, "key_rate_limit"),
        ({"key_rate_limit": "0/second"}, "key_rate_limit"),
        ({"key_rate_limit": 5}, "key_rate_limit"),
    ],
)
async def test_bad_per_key_limits_are_a_422_naming_the_field_and_store_nothing(
    api: AsyncTestClient[Any], db: asyncpg.Connection, body: dict[str, Any], field: str
) -> None:
    response = await api.patch("/queues/lim", json={"global_concurrency": 4, **body})
    assert response.status_code == 422, response.text
    assert field in response.text
    assert await db.fetchval("SELECT count(*) FROM queues") == 0


async def test_per_key_limits_are_shown_and_cleared_by_null(api: AsyncTestClient[Any]) -> None:
    response = await api.patch("/queues/lim", json={"key_concurrency": 2, "key_rate_limit": "10/minute"})
    assert response.status_code == 200, response.text
    listed = {q["name"]: q for q in (await api.get("/queues")).json()}
    assert listed["lim"]["limits"]["key_concurrency"] == 2
    assert listed["lim"]["limits"]["key_rate_limit"] == "10/minute"
    response = await api.patch("/queues/lim", json={"key_rate_limit": None})
    assert response.json()["limits"]["key_rate_limit"] is None
    assert response.json()["limits"]["key_concurrency"] == 2


async def workers_up(db: asyncpg.Connection, n: int) -> None:
    await wait_until(
        lambda: db.fetchval(
            "SELECT count(DISTINCT owner) >= $1 FROM task_registrations WHERE expires_at > now()", n
        ),
        30,
    )


@pytest.mark.slow
async def test_three_processes_hold_two_per_key_and_serve_every_key_in_the_first_claims(
    dsn: str, db: asyncpg.Connection
) -> None:
    await set_key_limits(db, "lim", concurrency=2)
    workers = [start_worker(dsn, queues="lim", concurrency="8") for _ in range(3)]
    samples: list[int] = []
    try:
        await workers_up(db, 3)
        light = [f"k{n}" for n in range(1, 10)]
        async with db.transaction():  # one commit, one wake-up: every process claims at once
            await add_keyed(db, "k0", 10_000, queue="lim", task="wait", args={"seconds": 0.4})
            for key in light:
                await add_keyed(db, key, 4, queue="lim", task="wait", args={"seconds": 0.4})
        deadline = time.monotonic() + 60
        done = "SELECT count(*) FROM jobs WHERE state = 'succeeded' AND concurrency_key <> 'k0'"
        while await db.fetchval(done) < 36:
            per_key = await db.fetchval(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM jobs "
                "WHERE state = 'running' GROUP BY concurrency_key) AS c"
            )
            samples.append(per_key)
            assert time.monotonic() < deadline, await db.fetch(
                "SELECT concurrency_key, state, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2"
            )
            await asyncio.sleep(0.01)  # sampled every 10 ms through the run
    finally:
        for worker in workers:
            assert stop_worker(worker) == 0
    assert max(samples) == 2, Counter(samples)  # reached, never passed
    # Every key had a job started before any job ended: within the first claim of each process,
    # though k0's 10,000 jobs are older than all the others.
    first_end = await db.fetchval("SELECT min(finished_at) FROM jobs")
    late = await db.fetch(
        "SELECT concurrency_key, min(started_at) FROM jobs GROUP BY 1 HAVING min(started_at) >= $1", first_end
    )
    assert late == [], late
    assert await db.fetchval("SELECT max(attempts) FROM jobs") == 1


@pytest.mark.slow
async def test_a_per_key_rate_across_two_processes_holds_in_every_window(
    dsn: str, db: asyncpg.Connection
) -> None:
    await set_key_limits(db, "lim", rate=(5, 1.0))
    for key in "abc":
        await add_keyed(db, key, 100, queue="lim")
    workers = [start_worker(dsn, queues="lim", concurrency="20") for _ in range(2)]
    try:
        started = "SELECT count(*) > 0 FROM jobs WHERE started_at IS NOT NULL"
        await wait_until(lambda: db.fetchval(started), 30)
        first = await db.fetchval("SELECT min(started_at) FROM jobs")
        await wait_until(lambda: db.fetchval("SELECT now() > $1::timestamptz + interval '2.5 s'", first), 15)
    finally:
        for worker in workers:
            assert stop_worker(worker) == 0
    second = timedelta(seconds=1)
    for key in "abc":
        starts = [
            r[0]
            for r in await db.fetch(
                "SELECT started_at FROM jobs WHERE started_at IS NOT NULL AND concurrency_key = $1 "
                "ORDER BY 1",
                key,
            )
        ]
        for at in starts:  # no window of one second holds more than 5 of the key
            assert sum(1 for s in starts if at <= s < at + second) <= 5, (key, at)
        assert len(starts) >= 10, (key, len(starts))  # 2 full windows at least: held, not stalled
    assert await db.fetchval("SELECT max(attempts) FROM jobs") == 1  # none claimed and put back
