"""A bounded, honest shutdown, on real ``skiplock`` processes.

SIGINT/SIGTERM stops the scheduler and claiming at once, lets running jobs finish within
``SKIPLOCK_SHUTDOWN_GRACE_S``, records the outcome of every job that finished, hands the rest
back, and the process exits within grace + 5 s whatever a thread is doing. A second signal
exits at once.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
import pytest

from skiplock.queue import Engine
from skiplock.queue.schedules import ScheduleSpec
from tests.conftest import make_settings
from tests.support.live import free_port
from tests.support.waiting import wait_until
from tests.support.workers import spawn, stop_worker

GRACE_S = 2.0
MARGIN_S = 5.0


@contextmanager
def skiplock(dsn: str, command: str, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    """``skiplock worker`` or ``serve`` (on a free port, open), killed if a test leaves it behind."""
    if command == "serve":
        settings = {"port": str(free_port()), "auth": "off", **settings}
    process = spawn(dsn, command, stderr_to=None, lease_s="600", **settings)
    try:
        yield process
    finally:
        stop_worker(process, signal.SIGKILL)


async def running_job(db: asyncpg.Connection, task: str, args: dict[str, float]) -> int:
    job_id: int = await db.fetchval("INSERT INTO jobs (task, args) VALUES ($1, $2) RETURNING id", task, args)
    await wait_until(lambda: db.fetchval("SELECT state = 'running' FROM jobs WHERE id = $1", job_id), 30)
    return job_id


async def exit_after(process: subprocess.Popen[bytes], sig: int, limit_s: float) -> float:
    """Send ``sig``; seconds until the process exited (fails after ``limit_s``)."""
    sent = time.monotonic()
    process.send_signal(sig)
    try:
        await wait_until(lambda: process.poll() is not None, limit_s, interval=0.05)
    except AssertionError:
        raise AssertionError(f"still running {limit_s:.0f}s after {signal.Signals(sig).name}") from None
    return time.monotonic() - sent


async def job_row(db: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT state, attempts, lease_owner, result, errors FROM jobs WHERE id = $1", job_id
    )
    assert row is not None
    return row


@pytest.mark.parametrize(("command", "sig"), [("worker", signal.SIGTERM), ("serve", signal.SIGINT)])
async def test_a_60s_def_task_does_not_hold_the_exit_past_grace_plus_5s(
    dsn: str, db: asyncpg.Connection, command: str, sig: int
) -> None:
    with skiplock(dsn, command, shutdown_grace_s=str(GRACE_S)) as process:
        job_id = await running_job(db, "blocking", {"seconds": 60})
        took = await exit_after(process, sig, 20)
    row = await job_row(db, job_id)
    print(
        f"\n{command}, {signal.Signals(sig).name}, grace {GRACE_S:g}s: exited in {took:.2f}s ({row['state']})"
    )
    assert took < GRACE_S + MARGIN_S
    assert process.returncode == 0
    assert (row["state"], row["lease_owner"]) == ("queued", None)  # handed back, not left to its lease


async def test_a_def_task_that_returns_within_the_grace_is_recorded_succeeded(
    dsn: str, db: asyncpg.Connection
) -> None:
    with skiplock(dsn, "worker", shutdown_grace_s="15") as process:
        job_id = await running_job(db, "blocking", {"seconds": 2})
        took = await exit_after(process, signal.SIGTERM, 20)
    row = await job_row(db, job_id)
    print(f"\n2 s def task, grace 15 s: exited in {took:.2f}s, job {row['state']}")
    assert (row["state"], row["result"]) == ("succeeded", {"thread": "done"}), row["errors"]
    assert process.returncode == 0


async def test_a_second_sigint_exits_at_once(dsn: str, db: asyncpg.Connection) -> None:
    with skiplock(dsn, "worker", shutdown_grace_s="60") as process:
        job_id = await running_job(db, "blocking", {"seconds": 60})
        process.send_signal(signal.SIGINT)
        # The first signal was handled once claiming stopped: its connection is closed.
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'skiplock-claim'"
            ),
            20,
        )
        took = await exit_after(process, signal.SIGINT, 10)
    print(f"\nsecond SIGINT: exited in {took:.2f}s with {process.returncode}")
    assert took < 2.0
    assert process.returncode == 128 + signal.SIGINT
    assert (await job_row(db, job_id))["state"] == "running"  # left to its lease: nothing waited


@asynccontextmanager
async def every_second_schedule(dsn: str, registry: object) -> AsyncIterator[int]:
    settings = make_settings(dsn, worker=False, scheduler=False)
    async with Engine(settings, registry, dsn) as engine:  # type: ignore[arg-type]
        spec = ScheduleSpec(name="every-second", cron="* * * * * *", task="noop")
        yield (await engine.client.schedules.create(spec)).id


async def test_the_scheduler_stops_firing_at_the_first_signal(
    dsn: str, db: asyncpg.Connection, registry: object
) -> None:
    async with every_second_schedule(dsn, registry) as schedule_id:
        fired = "SELECT count(*) FROM jobs WHERE schedule_id = $1"
        with skiplock(dsn, "worker", shutdown_grace_s="5") as process:
            await running_job(db, "blocking", {"seconds": 4})  # holds the shutdown for 4 s
            await wait_until(lambda: db.fetchval(fired, schedule_id), 20)
            before = await db.fetchval(fired, schedule_id)
            took = await exit_after(process, signal.SIGTERM, 20)
        after = await db.fetchval(fired, schedule_id)
    print(f"\nticks fired during a {took:.2f}s shutdown: {after - before}")
    assert took > 3  # the running job held the shutdown: the scheduler had time to fire
    assert after - before <= 1  # at most one fire already under way when the signal came
