"""A job's waiting_on: why a job that is not running has not started yet, computed when it is read
(GET /jobs, the dashboard), and the same reasons counted per queue (GET /queues, /metrics)."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from skiplock.queue._statements import JOBS
from skiplock.queue.models import JobState
from tests.factories import job
from tests.integration.test_key_limits import set_key_limits
from tests.integration.test_metrics import sample, scrape


async def waiting_on(conn: asyncpg.Connection, job_id: int) -> str | None:
    row = await conn.fetchrow(JOBS.job_get, job_id)
    assert row is not None
    reason: str | None = row["waiting_on"]
    return reason


async def register(conn: asyncpg.Connection, *tasks: str) -> None:
    await conn.executemany(
        "INSERT INTO task_registrations (task, owner, expires_at) "
        "VALUES ($1, 'w', now() + interval '1 hour')",
        [(t,) for t in tasks],
    )


async def test_each_reason_is_the_first_that_holds_the_job_back(tx: asyncpg.Connection) -> None:
    await register(tx, "noop")
    assert await waiting_on(tx, await job(tx, queue="free")) is None  # next in line
    assert await waiting_on(tx, await job(tx, JobState.RUNNING, queue="free")) is None
    assert await waiting_on(tx, await job(tx, JobState.SUCCEEDED, queue="free")) is None
    assert await waiting_on(tx, await job(tx, JobState.WAITING, queue="free")) == "dependencies"
    later = await job(tx, queue="free", run_at=await tx.fetchval("SELECT now() + interval '1 hour'"))
    assert await waiting_on(tx, later) == "run_at"
    assert await waiting_on(tx, await job(tx, task="nobody_runs_this", queue="free")) == "unknown_task"

    await tx.execute("INSERT INTO queues (name, paused) VALUES ('stopped', true)")
    assert await waiting_on(tx, await job(tx, queue="stopped")) == "paused"

    await tx.execute(
        "INSERT INTO queues (name, rate_limit, rate_period_s, starts) VALUES ('rated', 1, 60, ARRAY[now()])"
    )
    assert await waiting_on(tx, await job(tx, queue="rated")) == "rate_limit"

    await set_key_limits(tx, "busy", global_concurrency=1)
    queued = await job(tx, queue="busy")
    assert await waiting_on(tx, queued) is None
    await job(tx, JobState.RUNNING, queue="busy")
    assert await waiting_on(tx, queued) == "global_concurrency"


async def test_a_keys_limits_hold_only_its_own_jobs_back(tx: asyncpg.Connection) -> None:
    await register(tx, "noop")
    await set_key_limits(tx, "keyed", concurrency=1, rate=(1, 60.0))
    await job(tx, JobState.RUNNING, queue="keyed", concurrency_key="a")
    a = await job(tx, queue="keyed", concurrency_key="a")
    b = await job(tx, queue="keyed", concurrency_key="b")
    assert await waiting_on(tx, a) == "key_concurrency"
    assert await waiting_on(tx, b) is None
    await tx.execute(
        "INSERT INTO queue_key_starts (queue, key, starts, last_start) "
        "VALUES ('keyed', 'b', ARRAY[now()], now())"
    )
    assert await waiting_on(tx, b) == "rate_limit"


async def test_waiting_on_is_in_the_jobs_json_its_page_the_queues_and_the_metrics(
    api: AsyncTestClient[Any], db: asyncpg.Connection
) -> None:
    await set_key_limits(db, "held", concurrency=1)
    await job(db, JobState.RUNNING, queue="held", concurrency_key="a")
    blocked = await job(db, queue="held", concurrency_key="a")
    free = await job(db, queue="held", concurrency_key="b")
    assert (await api.get(f"/jobs/{blocked}")).json()["waiting_on"] == "key_concurrency"
    listed = {j["id"]: j["waiting_on"] for j in (await api.get("/jobs?queue=held")).json()["items"]}
    assert listed == {blocked: "key_concurrency", free: None, blocked - 1: None}
    page = await api.get(f"/ui/jobs/{blocked}")
    assert 'id="waiting-on">key_concurrency<' in page.text
    queues = {q["name"]: q for q in (await api.get("/queues")).json()}
    assert queues["held"]["waiting"] == {"key_concurrency": 1}
    text = await scrape(api)
    assert sample(text, "skiplock_jobs_waiting", queue="held", reason="key_concurrency") == 1
    assert sample(text, "skiplock_jobs_waiting", queue="held", reason="rate_limit") == 0
