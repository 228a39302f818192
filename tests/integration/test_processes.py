"""Worker processes for real: killed with SIGKILL, several at once, cancelled and stopped from outside."""

from __future__ import annotations

import signal

import asyncpg
import pytest

from skiplock.queue import Engine, TaskRegistry
from tests.conftest import make_settings
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

pytestmark = pytest.mark.slow


async def state_of(db: asyncpg.Connection, job_id: int) -> str:
    return str(await db.fetchval("SELECT state FROM jobs WHERE id = $1", job_id))


async def test_job_of_a_worker_killed_mid_run_is_rerun_elsewhere_and_succeeds(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    victim = start_worker(dsn, lease_s="2")
    try:
        job_id = await db.fetchval(
            "INSERT INTO jobs (task, args, max_attempts) VALUES ('hang_first_attempt', '{}', 3) RETURNING id"
        )
        await wait_until(
            lambda: db.fetchval("SELECT count(*) = 1 FROM test_runs WHERE job_id = $1", job_id), 20
        )
    finally:
        stop_worker(victim, signal.SIGKILL)
    assert await state_of(db, job_id) == "running"
    # Another process (this one) rescues the job once the dead worker's lease runs out.
    async with Engine(make_settings(dsn, lease_s=2), registry, dsn):
        await wait_until(
            lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id), 15
        )
    row = await db.fetchrow("SELECT attempts, errors, result FROM jobs WHERE id = $1", job_id)
    assert row is not None
    assert row["attempts"] == 2
    assert row["result"] == {"attempt": 2}
    assert [e["type"] for e in row["errors"]] == ["LeaseLost"]


async def test_three_worker_processes_run_every_job_exactly_once(dsn: str, db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO jobs (task, args) SELECT 'record_run', '{}' FROM generate_series(1, 3000)")
    workers = [start_worker(dsn, concurrency="10") for _ in range(3)]
    try:
        await wait_until(
            lambda: db.fetchval("SELECT count(*) = 3000 FROM jobs WHERE state = 'succeeded'"),
            120,
            0.2,
        )
    finally:
        for worker in workers:
            assert stop_worker(worker) == 0
    assert await db.fetchval("SELECT count(*) FROM test_runs") == 3000
    assert await db.fetchval("SELECT count(DISTINCT job_id) FROM test_runs") == 3000
    assert await db.fetchval("SELECT max(attempts) FROM jobs") == 1
    owners = await db.fetchval("SELECT count(*) FROM jobs WHERE lease_owner IS NOT NULL")
    assert owners == 0


async def test_running_job_cancelled_through_another_process_ends_cancelled_within_2s(
    dsn: str, db: asyncpg.Connection, engine: Engine
) -> None:
    # `engine` here is only an API-side client; the worker subprocess runs the job.
    worker = start_worker(dsn, queues="remote")
    try:
        job = await engine.client.enqueue("wait", {"seconds": 60}, queue="remote")
        await wait_until(lambda: db.fetchval("SELECT state = 'running' FROM jobs WHERE id = $1", job.id), 20)
        await wait_until(
            lambda: db.fetchval("SELECT progress IS NOT NULL FROM jobs WHERE id = $1", job.id), 5
        )
        await engine.client.cancel(job.id)
        await wait_until(lambda: db.fetchval("SELECT state = 'cancelled' FROM jobs WHERE id = $1", job.id), 2)
    finally:
        stop_worker(worker)
    row = await db.fetchrow("SELECT attempts, finished_at, lease_owner FROM jobs WHERE id = $1", job.id)
    assert row is not None
    assert row["attempts"] == 1
    assert row["finished_at"] is not None
    assert row["lease_owner"] is None


async def test_shutdown_releases_a_running_job_at_once_for_another_process(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    worker = start_worker(dsn, shutdown_grace_s="0.5", lease_s="600")
    try:
        job_id = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('wait', '{\"seconds\": 3}') RETURNING id"
        )
        await wait_until(lambda: db.fetchval("SELECT state = 'running' FROM jobs WHERE id = $1", job_id), 20)
    finally:
        assert stop_worker(worker, signal.SIGTERM) == 0
    # Released, not left to a 600 s lease: queued again, the attempt kept (numbers never repeat).
    row = await db.fetchrow("SELECT state, attempts, lease_owner FROM jobs WHERE id = $1", job_id)
    assert row is not None
    assert (row["state"], row["attempts"], row["lease_owner"]) == ("queued", 1, None)
    async with Engine(make_settings(dsn), registry, dsn):
        await wait_until(
            lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id), 10
        )
    assert await db.fetchval("SELECT attempts FROM jobs WHERE id = $1", job_id) == 2
