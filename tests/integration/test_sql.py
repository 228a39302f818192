"""Every named statement prepares on the migrated schema; the claim obeys a pinned clock."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from skiplock.db.migrate import SQL as MIGRATE_SQL
from skiplock.db.migrate import discover, is_current, migrate
from skiplock.db.sqlfile import all_statements
from skiplock.db.stats import SQL as STATS_SQL
from skiplock.queue._statements import EVENTS, JOBS, QUEUES, SCHEDULES
from skiplock.tasks._statements import IMPORTS, PAGES, RECORDS
from tests.factories import job

STATEMENTS = {
    **{f"jobs.{k}": v for k, v in all_statements(JOBS).items()},
    **{f"queues.{k}": v for k, v in all_statements(QUEUES).items()},
    **{f"events.{k}": v for k, v in all_statements(EVENTS).items()},
    **{f"schedules.{k}": v for k, v in all_statements(SCHEDULES).items()},
    **{f"migrate.{k}": v for k, v in all_statements(MIGRATE_SQL).items()},
    **{f"stats.{k}": v for k, v in all_statements(STATS_SQL).items()},
    **{f"records.{k}": v for k, v in all_statements(RECORDS).items()},
    **{f"pages.{k}": v for k, v in all_statements(PAGES).items()},
    **{f"imports.{k}": v for k, v in all_statements(IMPORTS).items()},
}
#: Statements that read a temporary table another statement creates first.
NEEDS_FIRST = {
    "records.records_upsert_staged": RECORDS.records_stage,
    **{f"imports.{k}": IMPORTS.import_staging_create for k in all_statements(IMPORTS)},  # per session
}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_statement_prepares_against_the_migrated_schema(tx: asyncpg.Connection, name: str) -> None:
    if name in NEEDS_FIRST:
        await tx.execute(NEEDS_FIRST[name])
    await tx.prepare(STATEMENTS[name])


async def test_migrations_are_current_and_rerunning_applies_nothing(db: asyncpg.Connection) -> None:
    assert await is_current(db)
    assert await migrate(db) == []
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(discover())


async def test_claim_takes_only_due_jobs_by_the_pinned_clock(tx: asyncpg.Connection) -> None:
    run_at = await tx.fetchval("SELECT now() + interval '1 hour'")
    job_id = await job(tx, run_at=run_at)
    early = await tx.fetch(
        JOBS.job_claim_many, "default", 10, "me", 30.0, run_at - timedelta(seconds=1), ["noop"], []
    )
    assert early == []
    on_time = await tx.fetch(JOBS.job_claim_many, "default", 10, "me", 30.0, run_at, ["noop"], [])
    assert [r["id"] for r in on_time] == [job_id]
    assert on_time[0]["attempts"] == 1


async def test_claim_uses_the_partial_claim_index(tx: asyncpg.Connection) -> None:
    await tx.execute("SET LOCAL enable_seqscan = off")  # a tiny table would otherwise be scanned
    explain = await tx.prepare("EXPLAIN " + JOBS.job_claim_many)
    plan = "\n".join(r[0] for r in await explain.fetch("default", 10, "me", 30.0, None, ["noop"], []))
    assert "jobs_claim_idx" in plan


async def test_rescue_requeues_expired_leases_and_fails_exhausted_ones(
    db: asyncpg.Connection,
) -> None:
    from skiplock.queue.models import JobState

    expired = await db.fetchval("SELECT now() - interval '1 second'")
    retry = await job(db, JobState.RUNNING, lease_expires_at=expired, max_attempts=3)
    exhausted = await job(db, JobState.RUNNING, lease_expires_at=expired, max_attempts=1)
    alive = await job(db, JobState.RUNNING)
    picked = await db.fetch(JOBS.job_rescue_pick, 100, None, 0.0)
    assert {r["id"] for r in picked} == {retry, exhausted}
    ids = [r["id"] for r in picked]
    rows = {r["id"]: r["state"] for r in await db.fetch(JOBS.job_rescue_expired, ids, [60.0] * len(ids))}
    assert rows == {retry: "queued", exhausted: "failed"}
    # Retried after the task's backoff, not at once.
    assert await db.fetchval("SELECT run_at > now() + interval '59 seconds' FROM jobs WHERE id = $1", retry)
    assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", alive) == "running"
    errors = await db.fetchval("SELECT errors FROM jobs WHERE id = $1", retry)
    assert errors[0]["type"] == "LeaseLost"
    assert "factory" in errors[0]["message"]


async def test_finish_is_ignored_for_a_job_no_longer_ours(db: asyncpg.Connection) -> None:
    from skiplock.queue.models import JobState

    job_id = await job(db, JobState.RUNNING)
    written = await db.fetch(
        JOBS.job_finish_many,
        [job_id],
        [1],
        ["succeeded"],
        [None],
        [None],
        [0.0],
        [None],
        "someone-else",
    )
    assert written == []
    assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", job_id) == "running"


async def test_pruner_deletes_only_finished_jobs_past_retention(dsn: str, db: asyncpg.Connection) -> None:
    from skiplock.db.pool import create_pool
    from skiplock.queue._pruner import Pruner
    from skiplock.queue.models import JobState

    old = await db.fetchval("SELECT now() - interval '2 hours'")
    expired = [
        await job(db, state, finished_at=old)
        for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
    ]
    recent = await job(db, JobState.SUCCEEDED)
    queued = await job(db)
    for job_id in (expired[0], recent):
        await db.execute(
            "INSERT INTO job_events (job_id, seq, kind, data) VALUES ($1, 1, 'log', '{}')", job_id
        )
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        pruner = Pruner(pool, retention_s=3600, interval_s=60, batch=2)
        assert await pruner.prune_once() == 3
    finally:
        await pool.close()
    remaining = {r["id"] for r in await db.fetch("SELECT id FROM jobs")}
    assert remaining == {recent, queued}
    # a job's events go with it
    assert [r["job_id"] for r in await db.fetch("SELECT job_id FROM job_events")] == [recent]
    assert not remaining & set(expired)


async def test_a_cancel_asked_while_the_attempt_failed_wins_over_the_retry(tx: asyncpg.Connection) -> None:
    from skiplock.queue.models import JobState

    job_id = await job(tx, JobState.RUNNING, cancel_requested=True)
    error = '{"attempt": 1, "type": "RuntimeError", "message": "boom", "at": "2026-01-01T00:00:00Z"}'
    written = await tx.fetch(
        JOBS.job_finish_many, [job_id], [1], ["queued"], [None], [error], [5.0], [None], "factory"
    )
    assert [r["id"] for r in written] == [job_id]
    row = await tx.fetchrow("SELECT state, finished_at, errors FROM jobs WHERE id = $1", job_id)
    assert row["state"] == "cancelled"
    assert row["finished_at"] is not None
    assert row["errors"][0]["message"] == "boom"


async def test_release_at_shutdown_requeues_or_cancels_as_asked(tx: asyncpg.Connection) -> None:
    from skiplock.queue.models import JobState

    plain = await job(tx, JobState.RUNNING)
    asked = await job(tx, JobState.RUNNING, cancel_requested=True)
    released = await tx.fetch(JOBS.job_release_many, [plain, asked], "factory", [1, 1], [0.0, 0.0])
    rows = {r["id"]: r["state"] for r in released}
    assert rows == {plain: "queued", asked: "cancelled"}
    # The attempt stays counted (attempt numbers never repeat); the interrupted run gets one more.
    row = await tx.fetchrow("SELECT attempts, max_attempts FROM jobs WHERE id = $1", plain)
    assert (row["attempts"], row["max_attempts"]) == (1, 3)
