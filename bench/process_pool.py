"""process-pool: a 10 ms CPU task drained by `skiplock serve` with 2 pool children (against the
same work as a plain def on threads), and GET /health's latency while the pool is saturated."""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp

from bench.drain import TIMEOUT_S
from bench.http_enqueue import wait_healthy
from bench.processes import free_port, skiplock
from bench.runner import Bench
from skiplock.db.pool import connect

CHILDREN = 2
HEALTH_INTERVAL_S = 0.01


async def run(bench: Bench) -> None:
    count = bench.size(2000, 300)
    rate, health = await drain(bench, count, "bench_cpu_process")
    bench.record("process-pool", "10 ms CPU task, 2 children", rate, "jobs/s", target="~ 2 x 100 jobs/s")
    bench.record("process-pool", "GET /health p99, pool saturated", health, "ms", target="<= 20 ms")
    rate, health = await drain(bench, count, "bench_cpu_thread")
    bench.record("process-pool", "the same on threads (def)", rate, "jobs/s")
    bench.record("process-pool", "GET /health p99, threads busy", health, "ms")
    rate, _ = await drain(bench, count, "bench_cpu_process", ms=0)
    bench.record("process-pool", "an empty task, 2 children (the pool's own cost)", rate, "jobs/s")


async def drain(bench: Bench, count: int, task: str, ms: float = 10) -> tuple[float, float]:
    """Jobs per second (first to last completion: the children's start is not counted) and the
    p99 of GET /health asked every 10 ms meanwhile."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO jobs (task, args) SELECT $1, jsonb_build_object('ms', $3::float8)"
                " FROM generate_series(1, $2)",
                task,
                count,
                ms,
            )
            sizes = {"concurrency": str(CHILDREN * 8), "process_pool_size": str(CHILDREN)}
            with skiplock(dsn, "serve", "--port", str(port), count=1, **sizes):
                async with aiohttp.ClientSession() as session:
                    await wait_healthy(session, base)
                    latencies: list[float] = []
                    deadline = time.monotonic() + TIMEOUT_S
                    while await conn.fetchval("SELECT count(*) FROM jobs WHERE state <> 'succeeded'"):
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"process-pool drain of {task} did not finish")
                        for _ in range(10):
                            started = time.perf_counter()
                            async with session.get(f"{base}/health") as response:
                                await response.read()
                            latencies.append((time.perf_counter() - started) * 1000)
                            await asyncio.sleep(HEALTH_INTERVAL_S)
            span = await conn.fetchval(
                "SELECT extract(epoch FROM max(finished_at) - min(finished_at)) FROM jobs"
            )
        finally:
            await conn.close()
    return (count - 1) / float(span), statistics.quantiles(latencies, n=100)[98]
