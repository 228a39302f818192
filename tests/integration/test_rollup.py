"""The per-minute rollup behind the dashboard's charts: its numbers against known jobs, idempotent
run twice or by two replicas at once, incremental (a second run reads only the new minutes of
jobs_finished_at_idx), pruned after its retention, and read back as series."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from skiplock.queue._pruner import Pruner
from skiplock.queue._rollup import CHUNK_S, FIRST_S, LOOKBACK_S, MAX_S, Rollup
from skiplock.queue._statements import STATS
from skiplock.queue.stats import Stats, bucket_value_s, percentile_s
from tests.support.plans import index_and_partitions, is_jobs

# A fixed clock (mid-minute) so every job's minute is known.
NOW = datetime(2026, 12, 1, 12, 30, 30, tzinfo=UTC)
MINUTE = datetime(2026, 12, 1, 12, 25, tzinfo=UTC)

INSERT = """
INSERT INTO jobs (queue, task, state, attempts, run_at, started_at, finished_at)
SELECT $1, 't', $2::job_state, 1, $3::timestamptz, $3::timestamptz + make_interval(secs => w), $4::timestamptz
FROM unnest($5::float8[]) AS w
"""


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def finish(db: asyncpg.Connection, queue: str, state: str, at: datetime, waits: list[float]) -> None:
    """Jobs of ``queue`` that ended in ``state`` at ``at``, having waited ``waits`` seconds each."""
    await db.execute(INSERT, queue, state, at - timedelta(seconds=60), at, waits)


async def rows(db: asyncpg.Connection) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in await db.fetch(
            "SELECT queue, minute, succeeded, failed, cancelled, wait_buckets, wait_counts"
            " FROM job_stats_minutes WHERE succeeded + failed + cancelled > 0 ORDER BY minute, queue"
        )
    ]


async def test_outcomes_and_waits_per_queue_and_minute(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    waits = [0.01 * n for n in range(1, 101)]  # 10 ms … 1 s
    await finish(db, "mail", "succeeded", MINUTE + timedelta(seconds=5), waits)
    await finish(db, "mail", "failed", MINUTE + timedelta(seconds=59), [2.0, 2.0])
    await finish(db, "mail", "succeeded", MINUTE + timedelta(seconds=60), [30.0])  # the next minute
    await finish(db, "reports", "cancelled", MINUTE + timedelta(seconds=10), [0.5])
    # Cancelled before it started: counted, no wait.
    await db.execute(
        "INSERT INTO jobs (queue, task, state, finished_at) VALUES ('reports', 't', 'cancelled', $1)",
        MINUTE + timedelta(seconds=11),
    )
    await db.execute(
        "INSERT INTO jobs (queue, task, state) SELECT 'mail', 't', 'queued' FROM generate_series(1, 7)"
    )

    assert await Rollup(pool, interval_s=60).roll_once(NOW)

    got = await rows(db)
    assert [(r["queue"], r["minute"], r["succeeded"], r["failed"], r["cancelled"]) for r in got] == [
        ("mail", MINUTE, 100, 2, 0),
        ("reports", MINUTE, 0, 0, 2),
        ("mail", MINUTE + timedelta(minutes=1), 1, 0, 0),
    ]
    mail = got[0]
    assert sum(mail["wait_counts"]) == 102
    assert mail["wait_buckets"] == sorted(mail["wait_buckets"])
    # p50 of 10 ms … 1 s and two 2 s waits: 0.51 s exactly, the bucket's value within 9%.
    p50 = percentile_s(mail["wait_buckets"], mail["wait_counts"], 0.5)
    p95 = percentile_s(mail["wait_buckets"], mail["wait_counts"], 0.95)
    assert p50 is not None
    assert abs(p50 - 0.51) / 0.51 < 0.09
    assert p95 is not None
    assert abs(p95 - 0.96) / 0.96 < 0.09
    assert got[1]["wait_counts"] == [1]  # the unstarted cancelled job has no wait
    depth = await db.fetchval(
        "SELECT queued FROM job_stats_minutes WHERE queue = 'mail' AND minute = $1",
        MINUTE + timedelta(minutes=5),
    )
    assert depth == 7

    # The series over the hour: every queue together, and one queue.
    series = await Stats(pool).series("1h", now=NOW)
    assert len(series.points) == 60
    assert series.step_s == 60
    point = next(p for p in series.points if p.at == MINUTE)
    assert (point.succeeded, point.failed, point.cancelled) == (100, 2, 2)
    assert series.points[-1].queued == 7
    mail_only = await Stats(pool).series("1h", "mail", now=NOW)
    point = next(p for p in mail_only.points if p.at == MINUTE)
    assert (point.succeeded, point.failed, point.cancelled, point.wait_p50_s) == (100, 2, 0, p50)
    day = await Stats(pool).series("1d", now=NOW)
    assert len(day.points) == 144
    assert sum(p.succeeded for p in day.points) == 101


async def test_a_minute_whose_jobs_are_gone_reads_zero_when_it_is_recomputed(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    recent = NOW.replace(second=0) - timedelta(minutes=1)  # within the next turn's lookback
    await finish(db, "mail", "failed", recent + timedelta(seconds=5), [1.0, 1.0, 1.0])
    assert await Rollup(pool, interval_s=60).roll_once(NOW)
    assert [(r["queue"], r["failed"]) for r in await rows(db) if r["minute"] == recent] == [("mail", 3)]
    # Retried (or deleted) before the minute leaves the lookback: the next turn recomputes it.
    await db.execute("DELETE FROM jobs WHERE state = 'failed'")
    assert await Rollup(pool, interval_s=60).roll_once(NOW + timedelta(seconds=30))
    got = await db.fetch(
        "SELECT queue, succeeded, failed, cancelled, wait_counts FROM job_stats_minutes WHERE minute = $1",
        recent,
    )
    assert [tuple(r) for r in got] == [("mail", 0, 0, 0, [])]


async def test_a_depth_sample_that_fails_loses_only_itself_not_the_turns_outcomes(
    db: asyncpg.Connection, pool: asyncpg.Pool, dsn: str
) -> None:
    await finish(db, "mail", "succeeded", MINUTE + timedelta(seconds=5), [0.1])
    locker = await asyncpg.connect(dsn)
    try:
        # The sample reads queues; a lock held on it makes the sample's statement fail on its time
        # limit (made short here), as a count of a huge backlog would.
        await locker.execute("BEGIN; LOCK TABLE queues IN ACCESS EXCLUSIVE MODE")
        async with pool.acquire() as conn:
            name = await conn.fetchval("SELECT current_database()")
            await conn.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '200ms'")  # this test's own
        try:
            await pool.expire_connections()
            assert await Rollup(pool, interval_s=60).roll_once(NOW)
        finally:
            async with pool.acquire() as conn:
                await conn.execute(f'ALTER DATABASE "{name}" RESET lock_timeout')
            await pool.expire_connections()
    finally:
        await locker.close()
    got = [(r["queue"], r["minute"], r["succeeded"]) for r in await rows(db)]
    assert got == [("mail", MINUTE, 1)]  # the outcomes committed, the turn advanced
    assert await db.fetchval("SELECT rolled_to FROM job_stats_progress") is not None


async def test_idempotent_run_twice_and_by_two_replicas_at_once(
    db: asyncpg.Connection, pool: asyncpg.Pool, dsn: str
) -> None:
    for n in range(10):
        await finish(db, "default", "succeeded", MINUTE - timedelta(minutes=n), [0.1] * 50)
    other = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        ran = await asyncio.gather(
            Rollup(pool, interval_s=60).roll_once(NOW), Rollup(other, interval_s=60).roll_once(NOW)
        )
        assert True in ran  # one wrote; the other wrote the same after it, or skipped its turn
        first = await rows(db)
        assert sum(r["succeeded"] for r in first) == 500
        await db.execute("UPDATE job_stats_progress SET rolled_to = NULL")  # as a first run again
        assert await Rollup(other, interval_s=60).roll_once(NOW)
        assert await Rollup(pool, interval_s=60).roll_once(NOW)
        assert await rows(db) == first
    finally:
        await other.close()


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in nodes(child))]


async def test_a_second_run_reads_only_the_new_minutes(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    # An hour of old work, then the first run.
    for n in range(6, 60):
        await finish(db, "default", "succeeded", NOW - timedelta(minutes=n), [0.1] * 40)
    await db.execute("ANALYZE jobs")
    assert await Rollup(pool, interval_s=60).roll_once(NOW - timedelta(minutes=5))
    # Ten new jobs finish; the next run, five minutes later.
    await finish(db, "default", "failed", NOW - timedelta(seconds=20), [1.0] * 10)
    later = NOW
    tx = db.transaction()  # rolled back: EXPLAIN ANALYZE writes the rows
    await tx.start()
    try:
        window = await db.fetchrow(STATS.stats_window, later, LOOKBACK_S, FIRST_S, MAX_S, CHUNK_S)
        assert window is not None
        explained = await db.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + STATS.stats_roll, window["start"], window["until"]
        )
    finally:
        await tx.rollback()
    plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    on_jobs = [n for n in nodes(plan) if is_jobs(n.get("Relation Name"))]
    assert on_jobs
    assert all(n["Node Type"] != "Seq Scan" for n in on_jobs)
    finished_at_idx = await index_and_partitions(db, "jobs_finished_at_idx")
    assert all(n.get("Index Name") in finished_at_idx for n in on_jobs)
    # The new minutes and the lookback's (7 minutes back from the first run: 2 x 40 old jobs at most).
    assert sum(n["Actual Rows"] for n in on_jobs) <= 10 + 2 * 40
    assert await Rollup(pool, interval_s=60).roll_once(later)
    got = await rows(db)
    assert sum(r["failed"] for r in got) == 10
    assert sum(r["succeeded"] for r in got) == 54 * 40


async def test_minutes_older_than_the_retention_are_pruned(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await db.execute(
        "INSERT INTO job_stats_minutes (queue, minute, succeeded) VALUES"
        " ('default', $1, 1), ('default', $2, 2)",
        MINUTE - timedelta(days=9),
        MINUTE - timedelta(days=7),
    )
    pruner = Pruner(pool, retention_s=86_400, interval_s=60, stats_retention_s=8 * 86_400)
    assert await pruner.prune_stats(NOW) == 1
    assert [r["succeeded"] for r in await db.fetch("SELECT succeeded FROM job_stats_minutes")] == [2]


def test_wait_buckets_read_back_within_nine_percent() -> None:
    for wait_s in (0.0015, 0.04, 0.5, 3.0, 75.0, 4000.0):
        value = percentile_s([bucket(wait_s)], [1], 0.5)
        assert value is not None
        assert abs(value - wait_s) / wait_s < 0.09
    assert percentile_s([], [], 0.5) is None
    assert bucket_value_s(0) < 0.0013


def bucket(wait_s: float) -> int:
    import math

    return min(120, math.floor(4 * math.log2(max(wait_s * 1000, 1))))


async def test_stats_series_route_and_its_bad_input(
    api: AsyncTestClient[Any], db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO job_stats_minutes (queue, minute, succeeded, failed, wait_buckets, wait_counts, queued)"
        " VALUES ('mail', date_trunc('minute', now()) - interval '3 minutes', 4, 1, '{40}', '{5}', 9)"
    )
    response = await api.get("/stats/series", params={"queue": "mail"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["window"], body["step_s"], len(body["points"])) == ("1h", 60, 60)
    (point,) = [p for p in body["points"] if p["succeeded"]]
    assert (point["succeeded"], point["failed"], point["queued"]) == (4, 1, 9)
    assert point["wait_p50_s"] == point["wait_p95_s"] == bucket_value_s(40)
    day = (await api.get("/stats/series", params={"window": "1d"})).json()
    assert (day["step_s"], sum(p["succeeded"] for p in day["points"])) == (600, 4)
    for params in ({"window": "2h"}, {"queue": "no spaces allowed"}, {"window": ""}):
        response = await api.get("/stats/series", params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.headers["content-type"].startswith("application/json")
