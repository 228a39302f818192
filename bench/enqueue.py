"""enqueue-single (one transaction per job through Client.enqueue) and enqueue-bulk (COPY)."""

from __future__ import annotations

import time

from bench.floor import BULK_JOBS, SINGLE_JOBS
from bench.runner import REPEATS, Bench, median_of
from bench.tasks import bench_noop
from skiplock.db.pool import create_pool
from skiplock.queue import Client, EnqueueRequest, TaskRegistry


async def run(bench: Bench) -> None:
    await single(bench)
    await bulk(bench)


async def single(bench: Bench) -> None:
    count = bench.size(*SINGLE_JOBS)
    async with bench.database() as dsn:
        # As the engine's own pool is (the one POST /jobs uses): no session reset per release.
        pool = await create_pool(dsn, min_size=1, max_size=1, reset_sessions=False)
        try:
            client = Client(pool, TaskRegistry([bench_noop]))
            started = time.perf_counter()
            for _ in range(count):
                await client.enqueue("bench_noop", {})
            elapsed = time.perf_counter() - started
        finally:
            await pool.close()
    bench.record(
        "enqueue-single",
        "rate",
        count / elapsed,
        "jobs/s",
        floor="floor.insert_notify",
        target=">= 90% of floor",
    )


async def bulk(bench: Bench) -> None:
    rate = await median_of(REPEATS, lambda: bulk_once(bench))
    bench.record("enqueue-bulk", "rate", rate, "jobs/s", floor="floor.copy", target=">= 60% of floor")


async def bulk_once(bench: Bench) -> float:
    count = bench.size(*BULK_JOBS)
    async with bench.database() as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=1, reset_sessions=False)
        try:
            client = Client(pool, TaskRegistry([bench_noop]))
            requests = [EnqueueRequest("bench_noop", {}) for _ in range(count)]
            started = time.perf_counter()
            ids = await client.enqueue_many(requests)
            elapsed = time.perf_counter() - started
            assert len(ids) == count
        finally:
            await pool.close()
    return count / elapsed
