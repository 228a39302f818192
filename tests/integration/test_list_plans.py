"""Listing jobs by state reads about a page of rows, however the table is mixed.

The table is shaped as under a backlog: old finished jobs, a few running ones, and many newer
queued ones; a page of one state must be found without walking the crowd of another. Running
jobs may be read from the lease index (job_list says a running job holds a lease), so the state
index is not the only way to them.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from skiplock.db import connect
from skiplock.db.admin import create_database, drop_database
from skiplock.queue._statements import JOBS
from tests.conftest import TEMPLATE
from tests.support.plans import index_and_partitions, is_jobs

PAGE = 50
SLACK = 20
COUNTS = {"succeeded": 5_000, "failed": 30, "cancelled": 30, "running": 120, "queued": 30_000}


@pytest.fixture(scope="module")
async def mixed(pg_admin_dsn: str, template_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    name = f"list_plans_{os.getpid()}"
    dsn = await create_database(pg_admin_dsn, name, template=TEMPLATE)
    conn = await connect(dsn)
    try:
        await conn.execute(
            f"""
            INSERT INTO jobs (task, state, attempts, started_at, finished_at)
            SELECT 'noop', s::job_state, 1, now(), now()
            FROM unnest(ARRAY['succeeded', 'failed', 'cancelled'],
                        ARRAY[{COUNTS["succeeded"]}, {COUNTS["failed"]}, {COUNTS["cancelled"]}]) AS c(s, n),
                 generate_series(1, n);
            INSERT INTO jobs (task, state, attempts, started_at, lease_owner, lease_expires_at)
            SELECT 'noop', 'running', 1, now(), 'w', now() + interval '1 minute'
            FROM generate_series(1, {COUNTS["running"]});
            INSERT INTO jobs (task) SELECT 'noop' FROM generate_series(1, {COUNTS["queued"]});
            ANALYZE jobs;
            SET plan_cache_mode = force_custom_plan;
            """
        )
        yield conn
    finally:
        await conn.close()
        await drop_database(pg_admin_dsn, name)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def rows_of_jobs(node: dict[str, Any]) -> int:
    """Rows of jobs the plan's scans returned or discarded."""
    own = 0
    if is_jobs(node.get("Relation Name")):
        own = node["Actual Rows"] * node.get("Actual Loops", 1) + node.get("Rows Removed by Filter", 0)
    return int(own) + sum(rows_of_jobs(child) for child in node.get("Plans", []))


#: Succeeded pages are read by the primary key, newest first: behind a crowd of newer queued jobs
#: the planner (which takes states for evenly spread) walks them even with the (state, id DESC)
#: index there. Mostly the succeeded jobs are the crowd.
LISTED = sorted(set(COUNTS) - {"succeeded"})


@pytest.mark.parametrize("state", LISTED)
async def test_a_page_of_any_state_reads_about_a_page(mixed: asyncpg.Connection, state: str) -> None:
    args = (state, None, None, None, PAGE, None, None)
    page = await mixed.fetch(JOBS.job_list, *args)
    assert len(page) == min(PAGE, COUNTS[state])
    assert all(r["state"] == state for r in page)
    assert [r["id"] for r in page] == sorted((r["id"] for r in page), reverse=True)
    plan = (await mixed.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + JOBS.job_list, *args))[0]
    read = rows_of_jobs(plan["Plan"])
    # A state with fewer rows than a page may be read whole from its own index; never the crowd.
    assert read <= max(PAGE, COUNTS[state] if COUNTS[state] < 1_000 else 0) + SLACK, json.dumps(plan)


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_a_page_of_one_workflows_steps_reads_about_a_page(mixed: asyncpg.Connection, mode: str) -> None:
    """An old workflow's steps behind 20,000 newer steps of another and the whole mixed table: read
    from jobs_workflow_idx, under a generic plan too (what a prepared statement switches to)."""
    transaction = mixed.transaction()
    await transaction.start()
    try:
        await mixed.execute(
            """
            INSERT INTO jobs (task, state, workflow_id, step)
            SELECT 'noop', 'succeeded', 900001, 's' || n FROM generate_series(1, 200) AS n;
            INSERT INTO jobs (task, state, workflow_id, step)
            SELECT 'noop', 'waiting', 900002, 's' || n FROM generate_series(1, 20000) AS n;
            ANALYZE jobs;
            """
        )
        await mixed.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await mixed.execute("PREPARE listed AS " + JOBS.job_list)
        args = "NULL, NULL, NULL, NULL, 50, NULL, 900001"
        page = await mixed.fetch(f"EXECUTE listed({args})")
        assert len(page) == PAGE
        assert {r["workflow_id"] for r in page} == {900001}
        assert [r["id"] for r in page] == sorted((r["id"] for r in page), reverse=True)
        plan = (await mixed.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE listed({args})"))[0]
        await mixed.execute("DEALLOCATE listed")
    finally:
        await transaction.rollback()
    read = rows_of_jobs(plan["Plan"])
    assert PAGE <= read <= PAGE + SLACK, json.dumps(plan)
    used = {n.get("Index Name") for n in _nodes(plan["Plan"])}
    assert used & await index_and_partitions(mixed, "jobs_workflow_idx"), json.dumps(plan)


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_a_search_reads_no_more_than_its_window(mixed: asyncpg.Connection, mode: str) -> None:
    """The dashboard's search by args and error text (no index on either): its id window read by
    the primary key, whatever the table holds and whichever plan a prepared statement uses."""
    top = await mixed.fetchval(JOBS.job_max_id)
    transaction = mixed.transaction()
    await transaction.start()
    try:
        await mixed.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await mixed.execute("PREPARE searched AS " + JOBS.job_search)
        args = f"{top - 999}, {top}, NULL, NULL, NULL, '{{\"customer_id\": 42}}'::jsonb, '%timeout%', 50"
        assert await mixed.fetch(f"EXECUTE searched({args})") == []
        plan = (await mixed.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE searched({args})"))[0]
        await mixed.execute("DEALLOCATE searched")
    finally:
        await transaction.rollback()
    assert rows_of_jobs(plan["Plan"]) <= 1_000 + SLACK, json.dumps(plan)
