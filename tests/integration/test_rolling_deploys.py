"""Rolling deploys: a process claims only the tasks it registered; a job whose task no live
process knows stays queued, unattempted, counted, until a process that knows the task starts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from skiplock.errors import ConfigError, InvalidArgumentsError
from skiplock.queue import Engine, EnqueueRequest, task
from skiplock.queue._statements import JOBS, QUEUES
from skiplock.settings import Settings
from tests.conftest import make_settings
from tests.support.live import app_client
from tests.support.plans import is_jobs
from tests.support.tasks import NoArgs
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

OLDER = "tests.support.tasks"
NEWER = "tests.support.tasks,tests.support.newer_tasks"
NEWER_JOBS = 14  # as many as the issue saw lost in one try


async def live_registrations(db: asyncpg.Connection, task: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM task_registrations WHERE task = $1 AND expires_at > now()", task
    )
    return count


async def test_older_process_never_takes_a_newer_tasks_jobs(
    settings: Settings, registry: Any, db: asyncpg.Connection
) -> None:
    dsn = settings.database_url or ""
    older = start_worker(dsn, task_modules=OLDER)
    newer = None
    try:
        await wait_until(lambda: live_registrations(db, "noop"), 30)
        # The newer task's jobs at the head of the queue (higher priority), then jobs the older
        # process knows: once those ran, its claims have walked past the newer ones.
        newer_ids = await db.fetch(
            "INSERT INTO jobs (task, priority) SELECT 'newer_task', 10 FROM generate_series(1, $1)"
            " RETURNING id",
            NEWER_JOBS,
        )
        known = await db.fetch(
            "INSERT INTO jobs (task, args) SELECT 'record_run', jsonb_build_object('marker', 'k' || n)"
            " FROM generate_series(1, 20) AS n RETURNING id"
        )
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) = 20 FROM jobs WHERE id = ANY($1) AND state = 'succeeded'",
                [r["id"] for r in known],
            ),
            30,
        )
        ids = [r["id"] for r in newer_ids]
        untouched = await db.fetch("SELECT state::text, attempts FROM jobs WHERE id = ANY($1)", ids)
        assert [tuple(r) for r in untouched] == [("queued", 0)] * NEWER_JOBS

        async with app_client(make_settings(dsn, worker=False, scheduler=False), registry) as api:
            queues = {q["name"]: q for q in (await api.get("/queues")).json()}
            assert queues["default"]["waiting_for_unknown_task"] == NEWER_JOBS
            exposition = (await api.get("/metrics")).text
            assert re.search(r'skiplock_queue_unknown_task_jobs\{queue="default"\} 14\.0', exposition)
            overview = (await api.get("/ui", params={"fragment": "true"})).text
            assert re.search(r"data-unknown-task>14<", overview)

            newer = start_worker(dsn, task_modules=NEWER)
            await wait_until(
                lambda: db.fetchval(
                    "SELECT count(*) = $2 FROM jobs WHERE id = ANY($1) AND state = 'succeeded'",
                    ids,
                    NEWER_JOBS,
                ),
                30,
            )
            queues = {q["name"]: q for q in (await api.get("/queues")).json()}
            assert queues["default"]["waiting_for_unknown_task"] == 0
    finally:
        for process in (older, newer):
            if process is not None:
                stop_worker(process)
    runs = await db.fetch("SELECT job_id, attempt FROM test_runs WHERE job_id = ANY($1) ORDER BY job_id", ids)
    assert [(r["job_id"], r["attempt"]) for r in runs] == [(i, 1) for i in sorted(ids)]  # each once
    assert await db.fetchval("SELECT count(*) FROM task_registrations") == 0  # both unregistered on stop


async def test_a_task_registration_lapses_when_its_process_is_gone(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO task_registrations (task, owner, expires_at)"
        " VALUES ('noop', 'gone', now() - interval '1 s'), ('noop', 'alive', now() + interval '1 min')"
    )
    await db.execute("INSERT INTO jobs (task) VALUES ('noop'), ('sleep')")
    overview = {r["name"]: r for r in await db.fetch(QUEUES.queue_overview)}
    assert overview["default"]["waiting_for_unknown_task"] == 1  # sleep: no live row
    await db.execute("DELETE FROM task_registrations WHERE owner = 'alive'")
    overview = {r["name"]: r for r in await db.fetch(QUEUES.queue_overview)}
    assert overview["default"]["waiting_for_unknown_task"] == 2


async def test_queue_names_are_validated_the_same_everywhere(api: Any, db: asyncpg.Connection) -> None:
    # ':' separates a queue's limit in SKIPLOCK_QUEUES: a job in such a queue could never be served
    for bad in ("media:2", "a b", "q" * 101):
        one = await api.post("/jobs", json={"task": "noop", "queue": bad})
        assert one.status_code == 400, one.text  # as every schema error of POST /jobs
        assert "queue" in one.text
        batch = await api.post("/jobs/batch", json=[{"task": "noop"}, {"task": "noop", "queue": bad}])
        assert batch.status_code == 422, batch.text
        assert "queue" in batch.text
        if ":" not in bad:  # in SKIPLOCK_QUEUES, "media:2" is the queue media with a limit of 2
            with pytest.raises(ConfigError, match=r"SKIPLOCK_QUEUES.*bad queue name"):
                Settings.load(queues=f"default,{bad}:3")
        with pytest.raises(ConfigError, match=r"task 'misqueued'.*bad queue name"):
            task("misqueued", args=NoArgs, queue=bad)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    assert Settings.load(queues="media.hi-res_2:3").queues == ["media.hi-res_2:3"]


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_claim_stays_on_the_claim_index_behind_many_jobs_of_an_unknown_task(
    tx: asyncpg.Connection, plan_cache_mode: str
) -> None:
    await tx.execute(
        "INSERT INTO jobs (task, priority) SELECT 'newer_task', 10 FROM generate_series(1, 20000)"
    )
    await tx.execute("INSERT INTO jobs (task) SELECT 'noop' FROM generate_series(1, 10)")
    # A little other work beside them: history, and (since migration 0028 keeps history out of the
    # claim's table, jobs_live) running jobs. With none at all (a table of nothing but those queued
    # rows) the planner rightly prefers a sequential scan: both read the 20,000 rows, the scan a
    # little faster.
    await tx.execute(
        "INSERT INTO jobs (task, state) SELECT 'noop', 'succeeded' FROM generate_series(1, 5000)"
    )
    await tx.execute(
        "INSERT INTO jobs (task, queue, state, attempts, lease_owner, lease_expires_at)"
        " SELECT 'noop', 'other', 'running', 1, 'w', now() + interval '1 hour' FROM generate_series(1, 5000)"
    )
    await tx.execute("ANALYZE jobs")
    await tx.execute(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
    await tx.execute(f"PREPARE claim AS {JOBS.job_claim_many}")
    explained = await tx.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim('default', 10, 'me', 30.0, NULL, '{noop}', '{}', 0)"
    )
    await tx.execute("DEALLOCATE claim")
    plan = explained[0]  # the json codec decoded it
    scans = list(_scans_of_jobs(plan["Plan"]))
    assert scans[0]["Index Name"] == "jobs_claim_idx"
    assert all(scan["Node Type"] != "Seq Scan" for scan in scans)
    assert plan["Plan"]["Actual Rows"] == 10  # every known job, none of the unknown ones
    walked = scans[0]["Actual Rows"] + scans[0].get("Rows Removed by Filter", 0)
    took = scans[0]["Actual Total Time"]
    print(f"\nclaim behind 20,000 unknown-task jobs ({plan_cache_mode}): {took:.1f} ms, {walked:.0f} walked")


def _scans_of_jobs(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if is_jobs(node.get("Relation Name")) and node["Node Type"] != "ModifyTable":
        yield node
    for child in node.get("Plans", []):
        yield from _scans_of_jobs(child)


async def test_code_enqueueing_into_a_queue_no_worker_could_serve_is_refused(
    engine: Engine, db: asyncpg.Connection
) -> None:
    with pytest.raises(InvalidArgumentsError, match="bad queue name 'media:2'") as one:
        await engine.client.enqueue("noop", {}, queue="media:2")
    assert one.value.extra["errors"][0]["field"] == "queue"
    with pytest.raises(InvalidArgumentsError, match="job 1: bad queue name"):
        await engine.client.enqueue_many([EnqueueRequest("noop", {}), EnqueueRequest("noop", {}, "media:2")])
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
