"""A job's expiry (``expires_in_s`` / ``expires_at``): not started by then, it is never claimed and
the rescuer's round cancels it, with an error of type 'expired'. A job that started is not affected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from skiplock.errors import InvalidArgumentsError
from skiplock.queue import Engine, EnqueueRequest
from skiplock.queue._statements import JOBS
from skiplock.queue.models import JobState
from tests.factories import job
from tests.integration.test_engine import finished

CLAIM: list[Any] = ["default", 10, "me", 30.0, None, ["noop"], [], 0]  # job_claim_many's $1 … $8


async def assert_expired_unstarted(engine: Engine, job_id: int) -> None:
    done = await engine.client.get(job_id)
    assert (done.state, done.attempts, done.started_at) == ("cancelled", 0, None)
    assert [e.type for e in done.errors] == ["expired"]
    events = await engine.client.pool.fetch(
        "SELECT data FROM job_events WHERE job_id = $1 AND kind = 'state' ORDER BY seq", job_id
    )
    assert [(e["data"]["state"], e["data"]["previous"]) for e in events] == [("cancelled", "queued")]
    assert events[0]["data"]["error"]["type"] == "expired"


async def test_a_job_of_a_paused_queue_expires_unstarted_within_seconds(engine: Engine) -> None:
    await engine.client.set_paused("default", True)
    job_ = await engine.client.enqueue("record_run", {}, expires_in_s=0.5)
    assert job_.expires_at is not None
    assert 0.4 < (job_.expires_at - job_.created_at).total_seconds() < 0.6
    assert await finished(engine, job_.id, timeout=5) == "cancelled"
    await assert_expired_unstarted(engine, job_.id)
    await engine.client.set_paused("default", False)
    assert await engine.client.pool.fetchval("SELECT count(*) FROM test_runs") == 0


async def test_a_job_due_after_its_expiry_never_starts(engine: Engine) -> None:
    job_ = await engine.client.enqueue(
        "record_run", {}, delay_s=1.5, expires_at=datetime.now(UTC) + timedelta(seconds=0.5)
    )
    assert await finished(engine, job_.id, timeout=5) == "cancelled"
    await assert_expired_unstarted(engine, job_.id)
    await engine.client.pool.execute("SELECT pg_sleep(1.5)")  # past its run_at: it would run now
    assert await engine.client.pool.fetchval("SELECT count(*) FROM test_runs") == 0


async def test_an_expired_job_retried_by_hand_runs(engine: Engine) -> None:
    await engine.client.set_paused("default", True)
    job_ = await engine.client.enqueue("record_run", {}, expires_in_s=0.3)
    assert await finished(engine, job_.id, timeout=5) == "cancelled"
    await engine.client.set_paused("default", False)
    retried = await engine.client.retry(job_.id)
    assert retried.expires_at is None  # asked to run now: its old expiry no longer applies
    assert await finished(engine, job_.id, timeout=10) == "succeeded"
    assert await engine.client.pool.fetchval("SELECT count(*) FROM test_runs") == 1


async def test_a_job_started_before_its_expiry_runs_to_its_end(engine: Engine) -> None:
    job_ = await engine.client.enqueue("wait", {"seconds": 1.5}, expires_in_s=0.5)
    assert await finished(engine, job_.id, timeout=10) == "succeeded"
    assert (await engine.client.get(job_.id)).errors == []


async def test_a_bulk_enqueue_carries_each_jobs_expiry(engine: Engine) -> None:
    await engine.client.set_paused("default", True)
    ids = await engine.client.enqueue_many(
        [EnqueueRequest("noop", expires_in_s=0.5), EnqueueRequest("noop"), EnqueueRequest("noop")]
    )
    assert await finished(engine, ids[0], timeout=5) == "cancelled"
    await assert_expired_unstarted(engine, ids[0])
    rows = await engine.client.pool.fetch(
        "SELECT state::text, expires_at FROM jobs WHERE id = ANY($1)", ids[1:]
    )
    assert [(r["state"], r["expires_at"]) for r in rows] == [("queued", None)] * 2
    await engine.client.set_paused("default", False)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"expires_in_s": 5, "expires_at": datetime.now(UTC) + timedelta(hours=1)}, "not both"),
        ({"expires_in_s": 0}, "positive"),
        ({"expires_in_s": -1}, "positive"),
        ({"expires_in_s": float("inf")}, "positive"),
        ({"expires_at": datetime.now(UTC) - timedelta(seconds=1)}, "already past"),
        ({"expires_at": datetime(2030, 1, 1)}, "timezone"),
    ],
)
async def test_a_bad_expiry_is_refused_and_writes_nothing(
    engine: Engine, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidArgumentsError, match=words):
        await engine.client.enqueue("noop", {}, **options)
    with pytest.raises(InvalidArgumentsError, match=words):
        await engine.client.enqueue_many([EnqueueRequest("noop"), EnqueueRequest("noop", **options)])
    assert await engine.client.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_a_claim_never_takes_an_unstarted_job_past_its_expiry(tx: asyncpg.Connection) -> None:
    later = datetime.now(UTC) + timedelta(minutes=2)
    expiring = await job(tx, expires_at=datetime.now(UTC) + timedelta(minutes=1))
    retried = await job(tx, attempts=1, expires_at=datetime.now(UTC) + timedelta(minutes=1))
    plain = await job(tx)
    claimed = await tx.fetch(JOBS.job_claim_many, *CLAIM[:4], later, *CLAIM[5:])
    assert sorted(r["id"] for r in claimed) == [retried, plain]  # started once: its expiry is spent
    hint = await tx.fetchrow("SELECT 0 AS priority, '-infinity'::timestamptz AS run_at, 0::bigint AS id")
    assert hint is not None
    after = await tx.fetch(JOBS.job_claim_after, *CLAIM[:4], later, *CLAIM[5:], *hint)
    assert after == []
    assert [r["id"] for r in await tx.fetch(JOBS.job_claim_many, *CLAIM)] == [expiring]  # not yet expired


async def test_the_sweep_cancels_only_unstarted_queued_jobs_past_their_expiry(tx: asyncpg.Connection) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=1)
    later = datetime.now(UTC) + timedelta(minutes=2)
    expiring = await job(tx, expires_at=soon)
    await job(tx, expires_at=later + timedelta(minutes=1))  # not yet
    await job(tx, attempts=1, expires_at=soon)  # a retry: it started
    await job(tx, JobState.RUNNING, expires_at=soon)
    await job(tx)
    assert [r["id"] for r in await tx.fetch(JOBS.job_expire_queued, 100, later)] == [expiring]
    assert await tx.fetch(JOBS.job_expire_queued, 100, later) == []


Api = AsyncTestClient[Any]


async def test_post_jobs_takes_an_expiry(api: Api) -> None:
    created = await api.post("/jobs", json={"task": "noop", "queue": "nobody", "expires_in_s": 60})
    assert created.status_code == 201, created.text
    body = created.json()
    expires = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
    assert expires == timedelta(seconds=60)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = await api.post("/jobs", json={"task": "noop", "queue": "nobody", "expires_at": at})
    assert created.status_code == 201, created.text
    assert datetime.fromisoformat(created.json()["expires_at"]) == datetime.fromisoformat(at)
    batch = await api.post("/jobs/batch", json=[{"task": "noop", "queue": "nobody", "expires_in_s": 60}])
    assert batch.status_code == 201, batch.text
    (job_id,) = batch.json()["ids"]
    assert (await api.get(f"/jobs/{job_id}")).json()["expires_at"] is not None


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"expires_in_s": 60, "expires_at": "2999-01-01T00:00:00Z"}, "not both"),
        ({"expires_in_s": 0}, "positive"),
        ({"expires_in_s": -5}, "positive"),
        ({"expires_in_s": 10**9}, "366 days"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "already past"),
    ],
)
async def test_post_jobs_with_a_bad_expiry_is_a_422_and_writes_nothing(
    api: Api, db: asyncpg.Connection, fields: dict[str, Any], words: str
) -> None:
    response = await api.post("/jobs", json={"task": "noop", **fields})
    assert response.status_code == 422, response.text
    assert words in response.text
    batch = await api.post("/jobs/batch", json=[{"task": "noop"}, {"task": "noop", **fields}])
    assert batch.status_code == 422, batch.text
    assert "job 1" in batch.text
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_post_jobs_with_an_expiry_that_is_not_a_number_is_refused(api: Api) -> None:
    naive = "2999-01-01T00:00:00"
    for fields in ({"expires_in_s": "soon"}, {"expires_at": "tomorrow"}, {"expires_at": naive}):
        response = await api.post("/jobs", json={"task": "noop", **fields})
        assert response.status_code == 400, response.text  # a malformed field, as for run_at
        assert next(iter(fields)) in response.text
