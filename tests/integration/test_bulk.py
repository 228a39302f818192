"""POST /jobs/bulk: retry, cancel or delete many jobs by a job of its own, a batch a transaction,
each write guarded by state (a job that changed meanwhile is skipped and counted)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from pydantic import ValidationError

from skiplock.db.pool import create_pool
from skiplock.queue import bulk as bulk_actions
from skiplock.queue.bulk import BATCH, MAX_BULK, BulkPlan, JobFilter
from skiplock.queue.models import JobState
from tests.conftest import make_settings
from tests.factories import job
from tests.support.live import app_client
from tests.support.waiting import wait_until

Client = AsyncTestClient[Any]
#: A queue no worker of the tests serves: its queued jobs stay queued.
HELD = "held"


async def finished(api: Client, job_id: int, timeout: float = 30) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/jobs/{job_id}")).json()
        return body if body["state"] in ("succeeded", "failed", "cancelled") else None

    found: dict[str, Any] = await wait_until(final, timeout)
    assert found["state"] == "succeeded", found
    return found


def rows_of(records: list[asyncpg.Record]) -> dict[Any, Any]:
    return {r[0]: r[1] for r in records}


async def bulk(api: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/jobs/bulk", json=body)
    assert response.status_code == 202, response.text
    started: dict[str, Any] = response.json()
    done = await finished(api, started["job_id"])
    return {**started, "result": done["result"], "progress": done["progress"]}


async def test_bad_bulk_requests_are_422s_naming_the_field_and_write_nothing(
    api: Client, db: asyncpg.Connection
) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"ids": [1]}, "action"),
        ({"action": "explode", "ids": [1]}, "action"),
        ({"action": "cancel"}, "ids or filter"),
        ({"action": "cancel", "ids": [1], "filter": {}}, "ids or filter"),
        ({"action": "cancel", "ids": []}, "ids"),
        ({"action": "cancel", "ids": [0]}, "ids"),
        ({"action": "cancel", "ids": ["x"]}, "ids"),
        ({"action": "cancel", "filter": {"state": "asleep"}}, "state"),
        ({"action": "cancel", "filter": {"colour": "red"}}, "colour"),
        ({"action": "cancel", "filter": {"args": [1]}}, "args"),
        ({"action": "cancel", "filter": {"workflow_id": -1}}, "workflow_id"),
        ({"action": "cancel", "ids": [1], "extra": True}, "extra"),
    ]
    for body, field in bad:
        response = await api.post("/jobs/bulk", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.text, (body, response.text)
    response = await api.post("/jobs/bulk", content=b"[1, 2", headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_twenty_thousand_jobs_cancelled_by_filter_in_batches(
    api: Client, db: asyncpg.Connection
) -> None:
    n = 20 * BATCH
    await db.execute(
        "INSERT INTO jobs (queue, task, args) SELECT $1, 'noop', '{}' FROM generate_series(1, $2)", HELD, n
    )
    await job(db, JobState.QUEUED, queue="elsewhere")  # another queue's: not matched
    done = await bulk(api, {"action": "cancel", "filter": {"state": "queued", "queue": HELD}})
    assert done["matched"] == n
    assert done["result"] == {"action": "cancel", "matched": n, "done": n, "skipped": 0}
    assert done["progress"]["fraction"] == 1.0
    counts = rows_of(
        await db.fetch("SELECT state::text, count(*) FROM jobs WHERE queue = $1 GROUP BY 1", HELD)
    )
    assert counts == {"cancelled": n}
    assert await db.fetchval("SELECT state::text FROM jobs WHERE queue = 'elsewhere'") == "queued"
    # One transaction a batch: each batch's jobs share their transaction's now().
    assert (
        await db.fetchval("SELECT count(DISTINCT finished_at) FROM jobs WHERE queue = $1", HELD) == n // BATCH
    )
    events = await db.fetchval(
        "SELECT count(*) FROM job_events e JOIN jobs j ON j.id = e.job_id"
        " WHERE j.queue = $1 AND e.kind = 'state'",
        HELD,
    )
    assert events == n


async def test_cancel_by_ids_skips_and_counts_jobs_that_cannot_be_cancelled(
    api: Client, db: asyncpg.Connection
) -> None:
    queued = await job(db, JobState.QUEUED, queue=HELD)
    running = await job(db, JobState.RUNNING, queue=HELD)
    succeeded = await job(db, JobState.SUCCEEDED, queue=HELD)
    done = await bulk(api, {"action": "cancel", "ids": [queued, running, succeeded, 10**9]})
    assert done["matched"] == 4
    assert done["result"] == {"action": "cancel", "matched": 4, "done": 2, "skipped": 2}
    rows = rows_of(
        await db.fetch("SELECT id, state::text || ':' || cancel_requested FROM jobs WHERE queue = $1", HELD)
    )
    assert rows == {queued: "cancelled:false", running: "running:true", succeeded: "succeeded:false"}


async def test_retry_by_filter_skips_a_job_whose_unique_key_is_live(
    api: Client, db: asyncpg.Connection
) -> None:
    failed = [await job(db, JobState.FAILED, queue=HELD, task="always_fails") for _ in range(3)]
    held_key = await job(db, JobState.FAILED, queue=HELD, task="always_fails", unique_key="k")
    await job(db, JobState.QUEUED, queue=HELD, task="noop", unique_key="k")
    done = await bulk(api, {"action": "retry", "filter": {"state": "failed", "task": "always_fails"}})
    assert done["result"] == {"action": "retry", "matched": 4, "done": 3, "skipped": 1}
    states = rows_of(await db.fetch("SELECT id, state::text FROM jobs WHERE task = 'always_fails'"))
    assert states == {**dict.fromkeys(failed, "queued"), held_key: "failed"}


async def test_delete_takes_finished_jobs_and_steps_of_ended_workflows_only(
    api: Client, db: asyncpg.Connection
) -> None:
    response = await api.post(
        "/workflows",
        json={"steps": [{"name": "a", "task": "echo"}, {"name": "b", "task": "echo", "after": ["a"]}]},
    )
    ended_workflow = response.json()["id"]
    await wait_until(
        lambda: db.fetchval("SELECT finished_at FROM workflows WHERE id = $1", ended_workflow), 15
    )
    steps_held = [
        {"name": "first", "task": "echo", "queue": HELD},
        {"name": "other", "task": "echo", "queue": HELD},
    ]
    running_workflow = (await api.post("/workflows", json={"steps": steps_held})).json()["id"]
    first = await db.fetchval(
        "SELECT id FROM jobs WHERE workflow_id = $1 AND step = 'first'", running_workflow
    )
    await db.execute("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE id = $1", first)
    assert await db.fetchval("SELECT finished_at FROM workflows WHERE id = $1", running_workflow) is None
    finished_job = await job(db, JobState.SUCCEEDED, queue=HELD)
    queued_job = await job(db, JobState.QUEUED, queue=HELD)
    await db.execute(
        "INSERT INTO job_events (job_id, seq, kind, data) VALUES ($1, 1, 'log', '{}')", finished_job
    )
    steps = [r["id"] for r in await db.fetch("SELECT id FROM jobs WHERE workflow_id = $1", ended_workflow)]

    done = await bulk(api, {"action": "delete", "ids": [*steps, first, finished_job, queued_job]})
    assert done["result"]["done"] == len(steps) + 1
    assert done["result"]["skipped"] == 2
    left = {
        r["id"]
        for r in await db.fetch(
            "SELECT id FROM jobs WHERE id = ANY($1)", [*steps, first, finished_job, queued_job]
        )
    }
    assert left == {first, queued_job}
    assert await db.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", finished_job) == 0
    assert await db.fetchval("SELECT count(*) FROM job_deps WHERE job_id = ANY($1)", steps) == 0
    # The running workflow is whole and still reads; the ended one reads without its steps.
    assert (await api.get(f"/workflows/{running_workflow}")).status_code == 200
    assert (await api.get(f"/workflows/{ended_workflow}")).status_code == 200


async def test_count_says_how_many_jobs_a_filter_matches_and_writes_nothing(
    api: Client, db: asyncpg.Connection
) -> None:
    for _ in range(3):
        await job(db, JobState.FAILED, queue=HELD, args={"customer_id": 42})
    await job(db, JobState.FAILED, queue=HELD, args={"customer_id": 7})
    await job(db, JobState.QUEUED, queue=HELD, args={"customer_id": 42})
    response = await api.post("/jobs/bulk/count", json={"state": "failed", "args": {"customer_id": 42}})
    assert response.status_code == 200, response.text
    assert response.json() == {"matched": 3}
    assert (await api.post("/jobs/bulk/count", json={"queue": HELD})).json() == {"matched": 5}
    bad = await api.post("/jobs/bulk/count", json={"state": "late"})
    assert bad.status_code == 422
    assert "state" in bad.text
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE task = 'bulk_jobs'") == 0


async def test_cancelling_a_workflows_steps_in_bulk_cancels_what_depends_on_them(
    api: Client, db: asyncpg.Connection
) -> None:
    steps = [
        {"name": "first", "task": "echo", "queue": HELD},
        {"name": "then", "task": "echo", "after": ["first"]},
        {"name": "alone", "task": "echo", "queue": HELD},
    ]
    workflow = (await api.post("/workflows", json={"steps": steps})).json()
    done = await bulk(api, {"action": "cancel", "filter": {"workflow_id": workflow["id"], "queue": HELD}})
    assert done["result"] == {"action": "cancel", "matched": 2, "done": 2, "skipped": 0}
    states = rows_of(
        await db.fetch("SELECT step, state::text FROM jobs WHERE workflow_id = $1", workflow["id"])
    )
    assert states == {"first": "cancelled", "then": "cancelled", "alone": "cancelled"}
    ended = (await api.get(f"/workflows/{workflow['id']}")).json()
    assert ended["finished_at"] is not None
    assert ended["state"] != "running"


async def test_the_bulk_task_is_internal_every_public_enqueue_refuses_it(
    api: Client, db: asyncpg.Connection
) -> None:
    plan = {"action": "delete", "filter": {}, "top": 10**9, "bottom": 1, "matched": 10}
    one = {"task": "bulk_jobs", "args": plan}
    attempts = [
        ("/jobs", one),
        ("/jobs/batch", [one]),
        ("/workflows", {"steps": [{"name": "wipe", **one}]}),
        ("/schedules", {"name": "wipe", "cron": "* * * * *", **one}),
    ]
    for path, body in attempts:
        response = await api.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert "'bulk_jobs' is internal" in response.text, (path, response.text)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    assert await db.fetchval("SELECT count(*) FROM schedules WHERE task = 'bulk_jobs'") == 0
    # Only POST /jobs/bulk (Client.bulk) makes one.
    await bulk(api, {"action": "cancel", "ids": [10**9]})


async def test_a_plan_and_its_walk_are_bounded_by_max_bulk(
    dsn: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="matched"):
        plan_past = {"action": "delete", "filter": {}, "top": 10**9, "matched": MAX_BULK + 1}
        BulkPlan.model_validate({**plan_past, "asked_at": "2026-01-01T00:00:00Z"})
    ids = [await job(db, JobState.QUEUED, queue=HELD) for _ in range(5)]
    # A plan past the bound (made without validation) still walks at most MAX_BULK jobs.
    monkeypatch.setattr(bulk_actions, "MAX_BULK", 3)
    plan = BulkPlan.model_construct(
        action="cancel",
        ids=None,
        filter=JobFilter(queue=HELD),
        top=ids[-1],
        bottom=ids[0],
        matched=5,
        asked_at=await db.fetchval("SELECT now()"),
    )
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        outcome = await bulk_actions.run(pool, plan, lambda seen, done: asyncio.sleep(0))
    finally:
        await pool.close()
    assert outcome["done"] == 3
    states = rows_of(await db.fetch("SELECT id, state::text FROM jobs WHERE queue = $1", HELD))
    assert states == {**dict.fromkeys(ids[:2], "queued"), **dict.fromkeys(ids[2:], "cancelled")}


async def test_a_plan_run_again_does_not_retry_twice_nor_touch_jobs_finished_after_it_was_asked(
    api: Client, dsn: str, db: asyncpg.Connection
) -> None:
    failed = await job(db, JobState.FAILED, queue=HELD, task="always_fails")
    later = await job(db, JobState.QUEUED, queue=HELD, task="always_fails")
    done = await bulk(api, {"action": "retry", "filter": {"task": "always_fails"}})
    assert done["result"] == {"action": "retry", "matched": 2, "done": 1, "skipped": 1}
    # The retried job fails again, the queued one fails too, both after the request.
    await db.execute(
        "UPDATE jobs SET state = 'failed', finished_at = now() WHERE id = ANY($1)", [failed, later]
    )
    args = await db.fetchval("SELECT args FROM jobs WHERE id = $1", done["job_id"])
    plan = BulkPlan.model_validate(args)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        again = await bulk_actions.run(pool, plan, lambda seen, done: asyncio.sleep(0))
        deleting = await bulk_actions.run(
            pool, plan.model_copy(update={"action": "delete"}), lambda seen, done: asyncio.sleep(0)
        )
    finally:
        await pool.close()
    assert again["done"] == 0
    assert deleting["done"] == 0
    states = rows_of(await db.fetch("SELECT id, state::text FROM jobs WHERE queue = $1", HELD))
    assert states == {failed: "failed", later: "failed"}


async def test_a_bulk_action_no_worker_would_run_is_refused_with_409(
    api: Client, dsn: str, registry: Any, db: asyncpg.Connection
) -> None:
    body = {"action": "cancel", "ids": [10**9]}
    assert (await api.post("/queues/default/pause")).status_code in (200, 201)
    paused = await api.post("/jobs/bulk", json=body)
    assert paused.status_code == 409, paused.text
    assert "queue 'default', where bulk_jobs runs, is paused" in paused.text
    assert (await api.post("/queues/default/resume")).status_code in (200, 201)
    await bulk(api, body)
    await db.execute("UPDATE workers SET stopped_at = now()")  # the fleet gone: only the next one
    async with app_client(make_settings(dsn, queues=[HELD]), registry) as elsewhere:
        unserved = await elsewhere.post("/jobs/bulk", json=body)
    assert unserved.status_code == 409, unserved.text
    assert "no live worker serves queue 'default', where bulk_jobs runs" in unserved.text
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE task = 'bulk_jobs'") == 1
