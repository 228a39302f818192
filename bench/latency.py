"""latency: an idle `skiplock worker`; 500 jobs enqueued 10 ms apart; enqueue → start."""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.floor import LATENCY_GAP_S, LATENCY_JOBS
from bench.processes import skiplock
from bench.runner import Bench
from bench.tasks import bench_latency
from skiplock.db.pool import create_pool
from skiplock.queue import Client, TaskRegistry


async def run(bench: Bench) -> None:
    count = bench.size(*LATENCY_JOBS)
    async with bench.database() as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            client = Client(pool, TaskRegistry([bench_latency]))
            with skiplock(dsn, "worker"):
                warmup = await client.enqueue("bench_latency", {"enqueued_at": time.time()})
                await wait_done(client, [warmup.id])
                ids = []
                for _ in range(count):
                    job = await client.enqueue("bench_latency", {"enqueued_at": time.time()})
                    ids.append(job.id)
                    await asyncio.sleep(LATENCY_GAP_S)
                await wait_done(client, ids)
            rows = await pool.fetch(
                "SELECT (result->>'latency_ms')::float8 AS ms FROM jobs WHERE id = ANY($1)", ids
            )
        finally:
            await pool.close()
    latencies = sorted(r["ms"] for r in rows)
    q = statistics.quantiles(latencies, n=100)
    # Against the floor by difference: the target is the floor plus half a millisecond, and a ratio
    # of two small latencies says little (0.2 ms more on a 1 ms floor reads as 120 %).
    bench.record(
        "latency",
        "p50",
        statistics.median(latencies),
        "ms",
        floor="floor.latency p50",
        versus="difference",
        target="<= floor + 0.5 ms",
    )
    bench.record("latency", "p95", q[94], "ms")
    bench.record(
        "latency", "p99", q[98], "ms", floor="floor.latency p99", versus="difference", target="<= 10 ms"
    )
    bench.record("latency", "max", latencies[-1], "ms")


async def wait_done(client: Client, ids: list[int], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while await client.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1) AND state <> 'succeeded'", ids
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("latency jobs did not finish")
        await asyncio.sleep(0.05)
