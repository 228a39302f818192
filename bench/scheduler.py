"""scheduler: 10,000 enabled schedules due in the same second, three `skiplock worker` processes
firing them (workers off: only the schedulers) → time from the tick until every job for it exists,
and duplicates. They fire once a minute at the due second, so the due tick is one of theirs."""

from __future__ import annotations

import asyncio
import time

from bench.processes import skiplock
from bench.runner import Bench
from skiplock.db.pool import connect

TIMEOUT_S = 120


async def run(bench: Bench) -> None:
    count = bench.size(10_000, 2_000)
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            due = await conn.fetchval("SELECT date_trunc('second', now()) + interval '4 seconds'")
            await conn.execute(
                "INSERT INTO schedules (name, cron, task, next_run_at) "
                "SELECT 'bench-' || n, $3, 'bench_noop', $2 FROM generate_series(1, $1) AS n",
                count,
                due,
                f"{due.second} * * * * *",
            )
            with skiplock(dsn, "worker", count=3, worker="false"):
                deadline = time.monotonic() + TIMEOUT_S
                while await conn.fetchval(
                    "SELECT count(*) < $1 FROM jobs WHERE scheduled_for = $2", count, due
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError("schedules did not all fire")
                    await asyncio.sleep(0.1)
            span = await conn.fetchval(
                "SELECT extract(epoch FROM max(created_at) - $1) FROM jobs WHERE scheduled_for = $1", due
            )
            duplicates = await conn.fetchval(
                "SELECT count(*) - count(DISTINCT (schedule_id, scheduled_for)) FROM jobs "
                "WHERE schedule_id IS NOT NULL"
            )
            fired = await conn.fetchval("SELECT count(*) FROM jobs WHERE scheduled_for = $1", due)
        finally:
            await conn.close()
    bench.record("scheduler", "schedules", count, "due")
    bench.record("scheduler", "all jobs exist after", float(span) * 1000, "ms")
    bench.record("scheduler", "jobs created", fired, "jobs")
    bench.record("scheduler", "duplicates", duplicates, "jobs", target="0")
