"""Every hot statement keeps one good plan: it reads a handful of rows whatever the table holds.

The table holds tens of thousands of running jobs (as when the completer falls behind); each
statement runs with a small batch under a forced generic plan (what a prepared statement switches
to after five runs) and a forced custom one, and its real plan (EXPLAIN ANALYZE) must not read
more than a few rows of ``jobs``: no sequential scan, next to nothing removed by a filter.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from skiplock.db import connect
from skiplock.db.admin import create_database, drop_database
from skiplock.db.sqlfile import Statement
from skiplock.queue._statements import EVENTS, JOBS
from skiplock.queue.models import JobState
from tests.conftest import TEMPLATE
from tests.factories import job
from tests.support.plans import is_jobs

CROWD = 50_000  # running jobs of other workers
FINISHED = 10_000
BATCHES = (8, 500)  # a small batch, and one as big as the completer's when it falls behind
MINE = max(BATCHES)  # running jobs of 'me' (and as many queued ones for the claim)
SLACK = 20  # rows of jobs a plan may read or discard beyond what its batch needs
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Crowd:
    dsn: str
    mine: list[int]  # running, owned by 'me', attempt 1; the first one asked to cancel
    expired: list[int]  # running, their lease expired (owner 'gone')
    past_expiry: list[int]  # queued in 'expiring', never started, their expiry passed


@pytest.fixture(scope="module", params=["analyzed", "stale"])
async def crowd(request: pytest.FixtureRequest, pg_admin_dsn: str, template_dsn: str) -> AsyncIterator[Crowd]:
    """Statistics taken with the crowd there, or before any job ran (autovacuum has not caught up
    with a surge, as on a big table it may not for long): the planner then believes next to no
    job runs, so that scanning every running one looks cheap."""
    stale = request.param == "stale"
    name = f"plans_{os.getpid()}_{request.param}"
    dsn = await create_database(pg_admin_dsn, name, template=TEMPLATE)
    conn = await connect(dsn)
    try:
        for part in ("jobs_live", "jobs_done_default"):  # statistics as set here (jobs is partitioned)
            await conn.execute(f"ALTER TABLE {part} SET (autovacuum_enabled = off)")
        await conn.execute(
            f"""
            INSERT INTO jobs (task, state, attempts, started_at, finished_at)
            SELECT 'noop', 'succeeded', 1, now(), now() FROM generate_series(1, {FINISHED});
            INSERT INTO jobs (task) SELECT 'noop' FROM generate_series(1, {MINE});
            -- Queued in another shard, ahead of those in claim order: a claim of shard 0 reads
            -- none of them (the shard leads the claim's index).
            INSERT INTO jobs (task, shard, priority) SELECT 'noop', 1, 5 FROM generate_series(1, {MINE});
            """
        )
        if stale:
            await conn.execute("ANALYZE jobs; ANALYZE job_events")
        await conn.execute(
            f"""
            INSERT INTO jobs (task, state, attempts, started_at, lease_owner, lease_expires_at)
            SELECT 'noop', 'running', 1, now(), 'crowd-' || (g % 50), now() + interval '1 hour'
            FROM generate_series(1, {CROWD}) AS g
            """
        )
        expired = [
            r["id"]
            for r in await conn.fetch(
                """
                INSERT INTO jobs (task, state, attempts, started_at, lease_owner, lease_expires_at)
                SELECT 'noop', 'running', 1, now(), 'gone', now() - interval '1 minute'
                FROM generate_series(1, 3)
                RETURNING id
                """
            )
        ]
        past_expiry = [
            r["id"]
            for r in await conn.fetch(
                """
                INSERT INTO jobs (task, queue, expires_at)
                SELECT 'noop', 'expiring', now() - interval '1 minute' FROM generate_series(1, 3)
                RETURNING id
                """
            )
        ]
        mine = [
            r["id"]
            for r in await conn.fetch(
                f"""
                INSERT INTO jobs (task, state, attempts, started_at, lease_owner, lease_expires_at,
                                  cancel_requested)
                SELECT 'noop', 'running', 1, now(), 'me', now() + interval '1 hour', g = 1
                FROM generate_series(1, {MINE}) AS g
                RETURNING id
                """
            )
        ]
        if not stale:
            await conn.execute("ANALYZE jobs; ANALYZE job_events")
    finally:
        await conn.close()
    yield Crowd(dsn, mine, expired, past_expiry)
    await drop_database(pg_admin_dsn, name)


def _finish_args(ids: list[int]) -> list[Any]:
    n = len(ids)
    return [
        ids,
        [1] * n,
        ["succeeded"] * (n - 1) + ["queued"],
        ['{"ok": true}'] * n,
        [None] * (n - 1) + ['{"type": "RuntimeError"}'],
        [0.0] * (n - 1) + [5.0],
        ['{"fraction": 1.0}'] * n,
        "me",
        0,
    ]


def _event_args(ids: list[int]) -> list[Any]:
    n = len(ids)
    return [
        [*ids, *ids],
        ["progress"] * n + ["log"] * n,
        ['{"fraction": 0.5}'] * n + ['{"message": "hi"}'] * n,
        [1] * 2 * n,
        "me",
    ]


def _whole_batch(n: int) -> int:
    return n


@dataclass(frozen=True)
class Hot:
    sql: Statement
    args: Callable[[list[int], Crowd], list[Any]]  # for a batch of ids among the crowd's `mine`
    rows: Callable[[int], int] | None  # what it returns for a batch of n: proof it did its work


HOT: dict[str, Hot] = {
    "job_claim_many": Hot(
        JOBS.job_claim_many,
        lambda ids, c: ["default", len(ids), "me", 30.0, None, ["noop"], [], 0],
        _whole_batch,
    ),
    "job_claim_after": Hot(  # going on after a job placed before every queued one
        JOBS.job_claim_after,
        lambda ids, c: ["default", len(ids), "me", 30.0, None, ["noop"], [], 0, 0, EPOCH, 0],
        _whole_batch,
    ),
    "job_finish_many": Hot(JOBS.job_finish_many, lambda ids, c: _finish_args(ids), _whole_batch),
    "job_fail_outcome_not_stored": Hot(
        JOBS.job_fail_outcome_not_stored,
        lambda ids, c: [ids[-1], 1, "me", "the outcome could not be stored", 0],
        lambda n: 1,
    ),
    "job_heartbeat": Hot(
        JOBS.job_heartbeat, lambda ids, c: [ids, "me", 30.0, [1] * len(ids), 0], _whole_batch
    ),
    "job_rescue_pick": Hot(JOBS.job_rescue_pick, lambda ids, c: [len(ids), None, 0.0], lambda n: 3),
    "job_rescue_expired": Hot(
        JOBS.job_rescue_expired, lambda ids, c: [c.expired, [0.5] * len(c.expired)], lambda n: 3
    ),
    "job_expire_queued": Hot(JOBS.job_expire_queued, lambda ids, c: [len(ids), None], lambda n: 3),
    "job_release_many": Hot(
        JOBS.job_release_many, lambda ids, c: [ids, "me", [1] * len(ids), [0.0] * len(ids), 0], _whole_batch
    ),
    "job_cancel_requested": Hot(JOBS.job_cancel_requested, lambda ids, c: [ids], lambda n: 1),
    "event_write_many": Hot(EVENTS.event_write_many, lambda ids, c: _event_args(ids), None),
}


#: What a failing statement owned elsewhere needs (each checked against this crowd): the form of
#: job_finish_many, rows found by id = ANY($1) alone, values taken at their place in the arrays.
PROPOSED_FIXES = {
    "job_heartbeat": "no unnest join: WHERE j.id = ANY($1::bigint[]) AND j.attempts = "
    "($4::int[])[array_position($1::bigint[], j.id)] AND j.state = 'running' AND j.lease_owner = $2",
    "job_release_many": "no unnest join: WHERE j.id = ANY($1::bigint[]) AND j.attempts = "
    "($3::int[])[array_position($1::bigint[], j.id)] AND j.state = 'running' AND j.lease_owner = $2",
    "job_rescue_expired": "no unnest join: WHERE j.id = ANY($1::bigint[]) AND j.state = 'running', run_at = "
    "now() + make_interval(secs => ($2::float8[])[array_position($1::bigint[], j.id)])",
    "job_rescue_pick": "leave state = 'running' out of its WHERE (a lease is set only while a job runs, and "
    "job_rescue_expired checks the state): then only jobs_lease_expiry_idx can serve it",
    "job_claim_many": "WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) instead of FROM picked "
    "WHERE j.id = picked.id",
}


@dataclass
class PlanFigures:
    jobs_rows_read: int = 0  # rows of jobs a scan produced or discarded, over all its loops
    discarded: int = 0  # rows any node removed by a filter, over all its loops
    seq_scans_on_jobs: int = 0

    def add(self, node: dict[str, Any]) -> None:
        loops = node.get("Actual Loops", 1) or 1
        removed = sum(
            node.get(key, 0)
            for key in (
                "Rows Removed by Filter",
                "Rows Removed by Join Filter",
                "Rows Removed by Index Recheck",
            )
        )
        self.discarded += removed * loops
        if is_jobs(node.get("Relation Name")) and node["Node Type"] != "ModifyTable":
            self.jobs_rows_read += (node.get("Actual Rows", 0) + removed) * loops
            self.seq_scans_on_jobs += node["Node Type"] == "Seq Scan"
        for child in node.get("Plans", []):
            self.add(child)


async def _literals(conn: asyncpg.Connection, sql: str, args: list[Any]) -> list[str]:
    """The arguments as SQL text (EXECUTE takes no protocol parameters), quoted by the server."""
    parameters = (await conn.prepare(sql)).get_parameters()
    assert len(parameters) == len(args), "the statement's parameters changed: update HOT"
    literals = []
    for value, parameter in zip(args, parameters, strict=True):
        type_name = await conn.fetchval("SELECT format_type($1, NULL)", parameter.oid)
        text = await conn.fetchval(f"SELECT quote_nullable($1::{type_name}::text)", value)
        literals.append(f"{text}::{type_name}")
    return literals


async def _explain(conn: asyncpg.Connection, sql: str, args: list[Any], mode: str) -> dict[str, Any]:
    literals = await _literals(conn, sql, args)
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await conn.execute(f"PREPARE hot AS {sql}")
        try:
            explained = await conn.fetchval(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE hot({', '.join(literals)})"
            )
        finally:
            await conn.execute("DEALLOCATE hot")
    finally:
        await transaction.rollback()  # EXPLAIN ANALYZE ran it: the crowd stays as it was
    plan: dict[str, Any] = explained[0]
    return plan


def _shape(node: dict[str, Any], depth: int = 0) -> str:
    line = (
        "  " * depth + node["Node Type"] + (f" on {node['Relation Name']}" if "Relation Name" in node else "")
    )
    if "Index Name" in node:
        line += f" using {node['Index Name']}"
    return "\n".join([line, *(_shape(child, depth + 1) for child in node.get("Plans", []))])


def _index_scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if node["Node Type"] in ("Index Scan", "Index Only Scan") else []
    return found + [scan for child in node.get("Plans", []) for scan in _index_scans(child)]


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
@pytest.mark.parametrize("name", ["job_claim_many", "job_claim_after"])
async def test_a_claim_reads_its_shard_alone_by_an_index_scan_led_by_the_shard(
    crowd: Crowd, name: str, mode: str
) -> None:
    hot = HOT[name]
    conn = await connect(crowd.dsn)
    try:
        explained = await _explain(conn, hot.sql, hot.args(crowd.mine[: BATCHES[0]], crowd), mode)
    finally:
        await conn.close()
    scans = [s for s in _index_scans(explained["Plan"]) if s.get("Index Name") == "jobs_claim_idx"]
    assert scans, _shape(explained["Plan"])
    (scan,) = scans
    assert scan["Index Cond"].startswith("((shard = "), scan["Index Cond"]
    assert scan.get("Rows Removed by Filter", 0) == 0  # no job of shard 1 read and put aside


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
@pytest.mark.parametrize("name", sorted(HOT))
async def test_hot_statement_reads_only_its_batch_among_tens_of_thousands_of_running_jobs(
    crowd: Crowd, name: str, mode: str, batch: int
) -> None:
    hot = HOT[name]
    conn = await connect(crowd.dsn)
    try:
        explained = await _explain(conn, hot.sql, hot.args(crowd.mine[:batch], crowd), mode)
    finally:
        await conn.close()
    figures = PlanFigures()
    figures.add(explained["Plan"])
    shape = _shape(explained["Plan"])
    print(
        f"\n{name} [{mode}, batch {batch}]: {figures.jobs_rows_read} rows of jobs read,"
        f" {figures.discarded} discarded, {figures.seq_scans_on_jobs} seq scans,"
        f" {explained['Execution Time']:.2f} ms\n{shape}"
    )
    problem = f"{name} under {mode} (batch {batch}) reads the crowd of running jobs; its plan:\n{shape}"
    if name in PROPOSED_FIXES:
        problem += f"\nproposed fix: {PROPOSED_FIXES[name]}"
    assert figures.jobs_rows_read > 0, problem  # it read jobs at all (its scans are seen)
    assert figures.seq_scans_on_jobs == 0, problem
    assert figures.jobs_rows_read <= 2 * batch + SLACK, problem  # the claim: picked, then updated
    assert figures.discarded <= batch + SLACK, problem
    if hot.rows is not None:
        assert explained["Plan"]["Actual Rows"] == hot.rows(batch), f"{name} did not do its work"


async def test_finish_many_gives_each_job_its_own_outcome_and_never_another_ones(
    tx: asyncpg.Connection,
) -> None:
    ids = [await job(tx, JobState.RUNNING, lease_owner="me") for _ in range(5)]
    stale = await job(tx, JobState.RUNNING, lease_owner="me", attempts=2)  # an older attempt's outcome

    def finish(order: list[int], attempts: dict[int, int]) -> list[Any]:
        return [
            order,
            [attempts.get(i, 1) for i in order],
            ["succeeded"] * len(order),
            [f'{{"id": {i}}}' for i in order],
            [None] * len(order),
            [0.0] * len(order),
            [None] * len(order),
            "me",
            0,
        ]

    written = await tx.fetch(JOBS.job_finish_many, *finish(sorted([*ids[:3], stale]), {stale: 1}))
    assert sorted(r["id"] for r in written) == sorted(ids[:3])  # not the stale attempt
    # Out of order (never sent so): a job may be left unwritten, but none gets another's result.
    await tx.fetch(JOBS.job_finish_many, *finish([ids[4], ids[3]], {}))
    rows = await tx.fetch("SELECT id, state::text, result FROM jobs WHERE id = ANY($1)", [*ids, stale])
    for row in rows:
        assert row["result"] in (None, {"id": row["id"]}), row
        assert (row["state"] == "succeeded") == (row["result"] is not None), row
    assert {r["id"] for r in rows if r["state"] == "succeeded"} >= set(ids[:3])
