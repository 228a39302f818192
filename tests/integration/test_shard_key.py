"""The shard key: every job is in its queue's shard (skiplock_shard), and every claim, outcome and
heartbeat reads one shard alone. skiplock_shard gives 0 for every queue; these tests put some
queues in shard 1 (the function redefined, in a rolled-back transaction or a database of their own)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from skiplock.queue import Engine
from skiplock.queue._statements import JOBS
from skiplock.queue.client import EnqueueRequest
from skiplock.queue.models import JobState
from skiplock.queue.schedules import ScheduleSpec
from skiplock.queue.workflows import Step, Workflow
from tests.conftest import make_settings
from tests.factories import job
from tests.integration.test_engine import finished
from tests.integration.test_key_limits import set_key_limits
from tests.support import outcome_tasks

assert outcome_tasks.enqueues_children.name == "enqueues_children"  # imported: in the registry

#: The queues these tests put in shard 1; every other queue stays in shard 0.
FAR = ("far", "nobody")
FAR_SHARDS = f"""
CREATE OR REPLACE FUNCTION skiplock_shard(queue text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (queue IN ('{FAR[0]}', '{FAR[1]}'))::int::smallint $$
"""
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


async def _claim(tx: asyncpg.Connection, kind: str, shard: int) -> list[int]:
    """The ids one claim statement of ``kind`` takes in ``shard`` of queue 'default'."""
    claim: list[Any] = ["default", 10, "me", 30.0, None, ["noop"], [], shard]
    sql = {
        "many": JOBS.job_claim_many,
        "after": JOBS.job_claim_after,
        "limited": JOBS.job_claim_limited,
        "keyed": JOBS.job_claim_keyed,
    }[kind]
    hint = [0, EPOCH, 0] if kind == "after" else []
    rows = await tx.fetch(sql, *claim, *hint)
    assert all(r["shard"] == shard for r in rows if r["id"] is not None)
    return [r["id"] for r in rows if r["id"] is not None]


@pytest.mark.parametrize("kind", ["many", "after", "limited", "keyed"])
async def test_a_claim_for_shard_0_never_takes_a_job_of_shard_1(tx: asyncpg.Connection, kind: str) -> None:
    if kind == "limited":
        await set_key_limits(tx, "default", global_concurrency=10)
    if kind == "keyed":
        await set_key_limits(tx, "default", concurrency=10)
    key: dict[str, Any] = {"concurrency_key": "k"} if kind == "keyed" else {}
    # The job of shard 1 comes first in claim order (the same priority and run_at, a lower id): only
    # the shard keeps the claim off it.
    other = await job(tx, shard=1, **key)
    ours = await job(tx, shard=0, **key)
    assert await _claim(tx, kind, 0) == [ours]
    assert await _claim(tx, kind, 0) == []
    assert await _claim(tx, kind, 1) == [other]


async def test_the_previous_releases_keyed_claim_claims_in_the_queues_shard(tx: asyncpg.Connection) -> None:
    await tx.execute(FAR_SHARDS)  # rolled back with the test
    await set_key_limits(tx, "far", concurrency=10)
    far = await job(tx, queue="far", concurrency_key="k", shard=1)
    # Its replicas call the signature without the shard while a rolling deploy lasts.
    old = "SELECT * FROM skiplock_claim_keyed($1, 10, 'me', 30.0, NULL, '{noop}', '{}')"
    assert [r["id"] for r in await tx.fetch(old, "far")] == [far]


async def test_an_outcome_or_heartbeat_naming_another_shard_writes_nothing(tx: asyncpg.Connection) -> None:
    job_id = await job(tx, JobState.RUNNING, shard=1)
    heartbeat = [[job_id], "factory", 60.0, [1]]
    assert await tx.fetch(JOBS.job_heartbeat, *heartbeat, 0) == []
    assert [r["id"] for r in await tx.fetch(JOBS.job_heartbeat, *heartbeat, 1)] == [job_id]
    finish = [[job_id], [1], ["succeeded"], [None], [None], [0.0], [None], "factory"]
    assert await tx.fetch(JOBS.job_finish_many, *finish, 0) == []
    assert await tx.fetchval("SELECT state FROM jobs WHERE id = $1", job_id) == "running"
    assert [r["id"] for r in await tx.fetch(JOBS.job_finish_many, *finish, 1)] == [job_id]


async def test_every_insert_path_puts_a_job_in_its_queues_shard_and_the_engine_runs_it_there(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    await db.execute(FAR_SHARDS)
    # A one-second lease: its heartbeat (every third of it) renews the sleeping job in shard 1.
    settings = make_settings(dsn, queues=["default", "far"], lease_s=1.0)
    async with Engine(settings, registry, dsn) as engine:
        client = engine.client
        ids = [
            (await client.enqueue("sleep", {"seconds": 1.2, "steps": 2}, queue="far")).id,
            # Its child goes to queue 'nobody' (never run), by job_insert_child.
            (await client.enqueue("enqueues_children", {"keys": ["a"]}, queue="far")).id,
            *await client.enqueue_many([EnqueueRequest("noop", queue="far"), EnqueueRequest("noop")]),
        ]
        flow = await client.start(Workflow(steps=(Step("a", "noop", queue="far"),), name="far"))
        ids += [s.job_id for s in flow.steps or []]
        spec = ScheduleSpec(name="far-hourly", cron="0 * * * *", task="noop", queue="far")
        ids.append((await client.schedules.trigger((await client.schedules.create(spec)).id)).id)
        for job_id in ids:
            assert await finished(engine, job_id) == "succeeded", job_id
    rows = await db.fetch("SELECT queue, shard FROM jobs ORDER BY id")
    assert {r["queue"] for r in rows} == {"default", *FAR}
    assert all(r["shard"] == (r["queue"] in FAR) for r in rows), [tuple(r) for r in rows]
