"""drain: 50,000 pre-enqueued no-op jobs run by one `skiplock worker` (median of three), then by three,
then by three under a global concurrency (see GLOBAL_LIMITS)."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench.floor import DRAIN_JOBS
from bench.processes import skiplock
from bench.runner import REPEATS, Bench, median_of
from skiplock.db.pool import connect

TIMEOUT_S = 300


async def run(bench: Bench) -> None:
    count = bench.size(*DRAIN_JOBS)
    one = await median_of(REPEATS, lambda: drain(bench, count, 1))
    bench.record(
        "drain", "1 process", one, "jobs/s", floor="floor.drain", target=">= 50% of floor, >= 20000 jobs/s"
    )
    three = await drain(bench, count, 3)
    bench.record("drain", "3 processes", three, "jobs/s", floor="floor.drain")
    for limit in GLOBAL_LIMITS:
        setup = f"INSERT INTO queues (name, global_concurrency) VALUES ('default', {limit})"
        limited = await drain(bench, count, 3, setup=setup)
        bench.record("drain", f"3 processes, global concurrency {limit}", limited, "jobs/s")


#: 300: as large as three workers' default concurrency together, the limit never holds a job back
#: (what the limited claim costs: it counts the queue's running jobs, in turns); 30: a binding one.
GLOBAL_LIMITS = (300, 30)


async def drain(
    bench: Bench, count: int, workers: int, task: str = "bench_noop", setup: str | None = None
) -> float:
    """Jobs per second; ``setup``, a statement run before the workers start (a comparison's change)."""
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await fill_noop_jobs(conn, count, task)
            if setup is not None:
                await conn.execute(setup)
            with skiplock(dsn, "worker", count=workers):
                deadline = time.monotonic() + TIMEOUT_S
                while await conn.fetchval("SELECT count(*) FROM jobs WHERE state <> 'succeeded'"):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"drain with {workers} workers did not finish")
                    await asyncio.sleep(0.1)
            # From the first claim to the last completion, by the database's clock: process start-up
            # and this loop's polling are not counted.
            span = await conn.fetchval(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs"
            )
        finally:
            await conn.close()
    return count / float(span)


async def fill_noop_jobs(conn: asyncpg.Connection, count: int, task: str = "bench_noop") -> None:
    """Pre-enqueue ``count`` jobs in one statement (setup, not measured)."""
    await conn.execute(
        "INSERT INTO jobs (task, args) SELECT $1, '{}' FROM generate_series(1, $2)", task, count
    )
    await conn.execute("VACUUM ANALYZE jobs")
