"""Every named statement prepares on the migrated schema; the claim obeys a pinned clock."""

from __future__ import annotations

import ast
import re
import typing
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import skiplock
from skiplock.db.migrate import discover, is_current, migrate
from skiplock.db.sqlfile import parse_statements
from skiplock.queue._statements import (
    JOBS,
    JobClaim,
    JobClaimAfter,
    JobFinish,
    JobHeartbeat,
    JobInsert,
    claim_jobs,
    finish_jobs,
    insert_job,
    renew_leases,
)
from tests.factories import job

SRC = Path(skiplock.__file__).parent
#: Every ``.sql`` file under src/, found on disk: a new file is prepared without being listed here.
SQL_FILES = sorted(SRC.rglob("*.sql"))
#: Identifiers cannot be parameters: skiplock.db.admin fills these in after checking them.
IDENTIFIERS = {"name": "skiplock_prepare_check", "template": "skiplock_prepare_template"}


def _statements() -> dict[str, str]:
    statements: dict[str, str] = {}
    for path in SQL_FILES:
        for name, text in parse_statements(path.read_text(encoding="utf-8")).items():
            key = f"{path.stem}.{name}"
            assert key not in statements, f"{key} is named in two .sql files"
            statements[key] = text.format(**IDENTIFIERS) if path.stem == "admin" else text
    return statements


STATEMENTS = _statements()
#: Statements that read a temporary table another statement creates first.
NEEDS_FIRST = {
    "records.records_upsert_staged": STATEMENTS["records.records_stage"],
    **{k: STATEMENTS["imports.import_staging_create"] for k in STATEMENTS if k.startswith("imports.")},
}


def _loaded_files() -> set[Path]:
    """The files every ``load_statements(cls, package, filename)`` call under src/ reads."""
    loaded: set[Path] = set()
    for module in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "load_statements"
            ):
                package, filename = (ast.literal_eval(arg) for arg in node.args[1:3])
                parts = package.split(".")
                assert parts[0] == "skiplock", f"{module}: {package}"
                loaded.add(SRC.joinpath(*parts[1:], filename))
    return loaded


def test_every_sql_file_the_code_loads_is_among_the_prepared() -> None:
    loaded = _loaded_files()
    assert loaded, "no load_statements call found under src/"
    assert loaded <= set(SQL_FILES), sorted(str(p) for p in loaded - set(SQL_FILES))
    for path in SQL_FILES:  # a file whose headers are mistyped would add nothing to the prepared
        assert any(k.startswith(f"{path.stem}.") for k in STATEMENTS), f"{path} holds no named statement"


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_statement_prepares_against_the_migrated_schema(tx: asyncpg.Connection, name: str) -> None:
    if name in NEEDS_FIRST:
        await tx.execute(NEEDS_FIRST[name])
    await tx.prepare(STATEMENTS[name])


#: Each hot statement and its typed parameters.
TYPED_PARAMETERS: dict[str, Any] = {
    "job_insert": JobInsert,
    "job_claim_many": JobClaim,
    "job_claim_after": JobClaimAfter,
    "job_claim_limited": JobClaim,
    "job_claim_keyed": JobClaim,
    "job_finish_many": JobFinish,
    "job_heartbeat": JobHeartbeat,
}


@pytest.mark.parametrize("name", sorted(TYPED_PARAMETERS))
async def test_typed_parameters_match_their_statement_place_by_place(
    tx: asyncpg.Connection, name: str
) -> None:
    params = TYPED_PARAMETERS[name]
    prepared = await tx.prepare(getattr(JOBS, name))
    kinds = [p.kind for p in prepared.get_parameters()]
    assert len(kinds) == len(params._fields), f"{name} has {len(kinds)} parameters"
    # An array parameter is a Sequence field, a scalar one is not: a shifted field fails here.
    hints = typing.get_type_hints(params)
    sequences = [typing.get_origin(hints[f]) is Sequence for f in params._fields]
    assert sequences == [kind == "array" for kind in kinds], list(zip(params._fields, kinds, strict=True))


async def test_a_job_inserted_claimed_renewed_and_finished_through_the_typed_calls(
    tx: asyncpg.Connection,
) -> None:
    inserted = await insert_job(
        tx,
        JobInsert(
            queue="default",
            task="noop",
            args={"n": 1},
            priority=3,
            run_at=None,
            delay_s=None,
            max_attempts=2,
            timeout_s=5.0,
            unique_key="typed-1",
            origin=None,
            wake_later=True,
        ),
    )
    assert inserted is not None
    assert inserted["created"]
    assert inserted["priority"] == 3
    job_id = inserted["id"]
    claim = JobClaim(
        queue="default", limit=5, owner="me", lease_s=30.0, now=None, tasks=["noop"], excluded=[], shard=0
    )
    assert await claim_jobs(tx, claim._replace(excluded=[job_id])) == []
    claimed = await claim_jobs(tx, claim)
    assert [(r["id"], r["attempts"], r["timeout_s"]) for r in claimed] == [(job_id, 1, 5.0)]
    renew = JobHeartbeat(ids=[job_id], owner="me", lease_s=60.0, attempts=[1], shard=0)
    assert await renew_leases(tx, renew._replace(owner="other"), statement_timeout_s=None) == set()
    assert await renew_leases(tx, renew, statement_timeout_s=None) == {job_id}
    finish = JobFinish(
        ids=[job_id],
        attempts=[1],
        states=["succeeded"],
        results=['{"ok": true}'],
        errors=[None],
        retry_in_s=[None],
        progress=[None],
        owner="me",
        shard=0,
    )
    assert await finish_jobs(tx, finish._replace(attempts=[2])) == []
    assert await finish_jobs(tx, finish) == [job_id]
    row = await tx.fetchrow("SELECT state, result FROM jobs WHERE id = $1", job_id)
    assert row is not None
    assert (row["state"], row["result"]) == ("succeeded", {"ok": True})


async def test_migrations_are_current_and_rerunning_applies_nothing(db: asyncpg.Connection) -> None:
    assert await is_current(db)
    assert await migrate(db) == []
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(discover())


async def test_claim_takes_only_due_jobs_by_the_pinned_clock(tx: asyncpg.Connection) -> None:
    run_at = await tx.fetchval("SELECT now() + interval '1 hour'")
    job_id = await job(tx, run_at=run_at)
    early = await tx.fetch(
        JOBS.job_claim_many, "default", 10, "me", 30.0, run_at - timedelta(seconds=1), ["noop"], [], 0
    )
    assert early == []
    on_time = await tx.fetch(JOBS.job_claim_many, "default", 10, "me", 30.0, run_at, ["noop"], [], 0)
    assert [r["id"] for r in on_time] == [job_id]
    assert on_time[0]["attempts"] == 1


async def test_claim_after_takes_the_jobs_of_the_hints_priority_after_it_in_claim_order(
    tx: asyncpg.Connection,
) -> None:
    t0 = await tx.fetchval("SELECT now() - interval '1 minute'")
    at = [t0, t0 + timedelta(seconds=1), t0 + timedelta(seconds=1), t0 + timedelta(seconds=2)]
    same = [await job(tx, run_at=run_at) for run_at in at]  # priority 0; two share a run_at
    higher = await job(tx, run_at=t0, priority=5)
    lower = await job(tx, run_at=t0, priority=-1)
    hint = [0, at[1], same[1]]  # where a claim that took same[0] and same[1] ended
    after = await tx.fetch(JOBS.job_claim_after, "default", 10, "me", 30.0, None, ["noop"], [], 0, *hint)
    # neither the hint's job nor another priority's; in claim order (an UPDATE returns its rows in
    # its plan's order, which the engine never relies on: ClaimHint.after takes the last by order)
    by_claim_order = sorted(after, key=lambda r: (-r["priority"], r["run_at"], r["id"]))
    assert [r["id"] for r in by_claim_order] == same[2:]
    rest = await tx.fetch(JOBS.job_claim_many, "default", 10, "me", 30.0, None, ["noop"], [], 0)
    assert [r["id"] for r in sorted(rest, key=lambda r: (-r["priority"], r["run_at"], r["id"]))] == [
        higher,
        *same[:2],
        lower,
    ]


async def test_claim_uses_the_partial_claim_index(tx: asyncpg.Connection) -> None:
    # Statistics of a table like a queue's, not of whatever the shared database's earlier tests
    # left behind (rolled-back rows make its indexes' sizes arbitrary): queued jobs of a few
    # queues among many finished ones, analysed in this transaction (rolled back with it).
    await tx.execute(
        "INSERT INTO jobs (task, queue, state, finished_at)"
        " SELECT 'noop', 'q' || (i % 4), CASE WHEN i % 5 = 0 THEN 'queued' ELSE 'succeeded' END::job_state,"
        " CASE WHEN i % 5 = 0 THEN NULL ELSE now() END FROM generate_series(1, 5000) AS i"
    )
    await tx.execute("ANALYZE jobs")
    await tx.execute("SET LOCAL enable_seqscan = off")  # a small table would otherwise be scanned
    explain = await tx.prepare("EXPLAIN " + JOBS.job_claim_many)
    plan = "\n".join(r[0] for r in await explain.fetch("q1", 10, "me", 30.0, None, ["noop"], [], 0))
    assert "jobs_claim_idx" in plan, plan
    # The shard leads the index and the claim names it: one shard's entries are read, no other's.
    assert re.search(r"Index Cond: \(\(shard = [^)]+\) AND \(queue = ", plan), plan


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
        0,
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
        JOBS.job_finish_many, [job_id], [1], ["queued"], [None], [error], [5.0], [None], "factory", 0
    )
    assert [r["id"] for r in written] == [job_id]
    row = await tx.fetchrow("SELECT state, finished_at, errors FROM jobs WHERE id = $1", job_id)
    assert row is not None
    assert row["state"] == "cancelled"
    assert row["finished_at"] is not None
    assert row["errors"][0]["message"] == "boom"


async def test_release_at_shutdown_requeues_or_cancels_as_asked(tx: asyncpg.Connection) -> None:
    from skiplock.queue.models import JobState

    plain = await job(tx, JobState.RUNNING)
    asked = await job(tx, JobState.RUNNING, cancel_requested=True)
    released = await tx.fetch(JOBS.job_release_many, [plain, asked], "factory", [1, 1], [0.0, 0.0], 0)
    rows = {r["id"]: r["state"] for r in released}
    assert rows == {plain: "queued", asked: "cancelled"}
    # The attempt stays counted (attempt numbers never repeat); the interrupted run gets one more.
    row = await tx.fetchrow("SELECT attempts, max_attempts FROM jobs WHERE id = $1", plain)
    assert row is not None
    assert (row["attempts"], row["max_attempts"]) == (1, 3)
