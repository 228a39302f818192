"""Time limits on the engine's connections: a statement that runs too long, waits on a lock too
long, or never gets an answer (a frozen server: SIGSTOP on its backend) ends with an error a loop
retries, and the connection is discarded; the pool tasks use cuts no long statement."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import pytest

from skiplock.db.pool import Limits, connect, create_pool, engine_limits, is_unavailable, task_limits
from tests.conftest import make_settings

ENGINE = Limits(connect_s=5, acquire_s=1, statement_s=0.3, lock_s=0.3, idle_in_transaction_s=0.5)


async def test_a_statement_past_the_limit_is_cancelled_and_reads_as_unavailable(dsn: str) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1, limits=ENGINE)
    try:
        started = time.monotonic()
        with pytest.raises(asyncpg.QueryCanceledError) as caught:
            await pool.fetchval("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 2
        assert is_unavailable(caught.value)
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_a_lock_wait_past_the_limit_fails_and_reads_as_unavailable(dsn: str) -> None:
    holder = await connect(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=1, limits=Limits(statement_s=5, lock_s=0.3))
    try:
        await holder.execute("BEGIN; LOCK TABLE queues IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(asyncpg.LockNotAvailableError) as caught:
            await pool.fetchval("SELECT count(*) FROM queues")
        assert is_unavailable(caught.value)
        await holder.execute("ROLLBACK")
        assert await pool.fetchval("SELECT count(*) FROM queues") == 0
    finally:
        await pool.close()
        await holder.close()


async def test_a_transaction_left_idle_is_ended_and_the_error_reads_as_unavailable(dsn: str) -> None:
    conn = await connect(dsn, limits=ENGINE)
    try:
        await conn.execute("BEGIN")
        await asyncio.sleep(1.5)  # the fault: a transaction left idle past its 0.5 s limit
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)) as caught:
            await conn.fetchval("SELECT 1")
        assert is_unavailable(caught.value)
    finally:
        conn.terminate()


async def test_a_frozen_backend_times_out_and_its_connection_is_discarded(dsn: str) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1, limits=ENGINE)
    frozen = await pool.fetchval("SELECT pg_backend_pid()")
    os.kill(frozen, signal.SIGSTOP)  # the server never answers, as over a half-open connection
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(pool.fetchval("SELECT 1"), timeout=30)
        waited_s = time.monotonic() - started
        assert is_unavailable(caught.value)
        assert waited_s < ENGINE.statement_s + 10  # the driver's limit: statement_s + 5 s
        # Terminated, not handed to the next caller: a new backend answers.
        assert await pool.fetchval("SELECT pg_backend_pid()") != frozen
    finally:
        os.kill(frozen, signal.SIGCONT)
        await pool.close()


async def test_the_pool_tasks_use_lets_a_statement_outrun_the_engine_limit(dsn: str) -> None:
    settings = make_settings(dsn, db_statement_timeout_s=0.2)
    assert engine_limits(settings).statement_s == 0.2
    pool = await create_pool(dsn, min_size=0, max_size=1, limits=task_limits(settings))
    try:
        assert await pool.fetchval("SELECT 1 FROM pg_sleep(0.5)") == 1
    finally:
        await pool.close()


async def test_the_engines_connections_are_named_for_pg_stat_activity(dsn: str) -> None:
    conn = await connect(dsn, limits=ENGINE, application_name="skiplock-listener")
    try:
        assert await conn.fetchval("SHOW application_name") == "skiplock-listener"
        assert await conn.fetchval("SHOW lock_timeout") == "300ms"
        assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "500ms"
    finally:
        await conn.close()


async def test_a_statement_cancelled_on_a_frozen_backend_returns_at_once_and_the_pool_goes_on(
    dsn: str,
) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1, limits=Limits(acquire_s=3))
    frozen = await pool.fetchval("SELECT pg_backend_pid()")
    os.kill(frozen, signal.SIGSTOP)
    try:
        started = time.monotonic()
        inner = asyncio.ensure_future(asyncio.wait_for(pool.fetchval("SELECT 1"), timeout=0.5))
        # Bounded from outside too: before, the cancel waited for the frozen server for ever.
        done, _ = await asyncio.wait({inner}, timeout=10)
        assert done, "the cancelled statement did not return"
        with pytest.raises(TimeoutError):
            inner.result()
        assert time.monotonic() - started < 3
        assert await pool.fetchval("SELECT pg_backend_pid()") != frozen
    finally:
        os.kill(frozen, signal.SIGCONT)
        if not inner.done():
            inner.cancel()
        pool.terminate()


async def test_a_backend_terminated_mid_statement_fails_as_unavailable_and_the_pool_goes_on(
    dsn: str, pg_admin_dsn: str
) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    admin = await connect(pg_admin_dsn)
    try:
        victim = await pool.fetchval("SELECT pg_backend_pid()")
        sleeping = asyncio.ensure_future(pool.fetchval("SELECT 1 FROM pg_sleep(10)"))
        await asyncio.sleep(0.3)  # the statement is running
        await admin.execute("SELECT pg_terminate_backend($1)", victim)  # FATAL 57P01 to it
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)) as caught:
            await asyncio.wait_for(sleeping, 5)
        assert is_unavailable(caught.value)
        assert await pool.fetchval("SELECT pg_backend_pid()") != victim
    finally:
        await admin.close()
        await pool.close()


async def test_a_process_stopped_inside_an_engine_transaction_keeps_no_job_from_the_rescuer(
    dsn: str, db: asyncpg.Connection
) -> None:
    """An engine transaction holding a running job's row, left idle as by a SIGSTOPped process:
    the server ends it within a lease, and the rescuer (SKIP LOCKED) then takes the job."""
    from skiplock.queue._statements import JOBS
    from skiplock.queue.models import JobState
    from tests.factories import job

    settings = make_settings(dsn, lease_s=1)
    expired = await db.fetchval("SELECT now() - interval '10 seconds'")
    job_id = await job(db, JobState.RUNNING, lease_expires_at=expired)
    stopped = await connect(dsn, limits=engine_limits(settings))
    try:
        await stopped.execute("BEGIN")
        await stopped.execute(JOBS.job_lock_rows, [job_id], 0)  # as the event writer or completer would
        assert await db.fetch(JOBS.job_rescue_pick, 10, None, 0.0) == []  # skipped while it is held
        started = time.monotonic()
        while not await db.fetch(JOBS.job_rescue_pick, 10, None, 0.0):
            assert time.monotonic() - started < 5, "the idle transaction still holds the job's row"
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 2.5
    finally:
        # The server has ended its session: a close's goodbye would meet a broken pipe.
        stopped.terminate()
