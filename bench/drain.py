"""drain: 50,000 pre-enqueued no-op jobs run by one `skiplock worker`, then by three."""

from __future__ import annotations

import asyncio
import time

from bench.floor import fill_noop_jobs
from bench.processes import skiplock
from bench.runner import Bench
from skiplock.db.pool import connect

TIMEOUT_S = 300


async def run(bench: Bench) -> None:
    count = bench.size(50_000, 10_000)
    for workers in (1, 3):
        rate = await drain(bench, count, workers)
        if workers == 1:
            bench.record(
                "drain", "1 process", rate, "jobs/s", floor="floor.claim_complete", target=">= 50% of floor"
            )
        else:
            bench.record("drain", "3 processes", rate, "jobs/s", floor="floor.claim_complete")


async def drain(bench: Bench, count: int, workers: int, task: str = "bench_noop") -> float:
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await fill_noop_jobs(conn, count, task)
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
