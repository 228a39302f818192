"""websocket-fanout: 500 subscribers on one `skiplock serve` following 50 jobs that report
progress 10 times a second → delivery latency (progress call → client receipt), events/s and the
server's RSS; and the drain rate of no-op jobs with and without one progress report each."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import orjson

from bench.drain import drain
from bench.http_enqueue import wait_healthy
from bench.processes import free_port, skiplock
from bench.runner import Bench

SUBSCRIBERS_PER_JOB = 10


async def run(bench: Bench) -> None:
    await fanout(bench)
    count = bench.size(20_000, 5_000)
    plain = await drain(bench, count, 1, task="bench_noop")
    reporting = await drain(bench, count, 1, task="bench_progress")
    bench.record("drain-progress", "without progress", plain, "jobs/s")
    bench.record(
        "drain-progress",
        "with progress",
        reporting,
        "jobs/s",
        floor="drain-progress.without progress",
        target=">= 70% of plain drain",
    )


async def fanout(bench: Bench) -> None:
    jobs, steps = bench.size(50, 10), bench.size(30, 10)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    received = 0
    async with bench.database() as dsn:
        with skiplock(dsn, "serve", "--port", str(port)) as (server,):
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                await wait_healthy(http, base)
                ids = []
                for _ in range(jobs):
                    body = {
                        "task": "bench_progress",
                        "args": {"steps": steps, "interval_s": 0.1},
                        "delay_s": 1,
                    }
                    async with http.post(f"{base}/jobs", json=body) as response:
                        ids.append((await response.json())["id"])

                async def subscriber(job_id: int) -> None:
                    nonlocal received
                    async with http.ws_connect(f"ws://127.0.0.1:{port}/ws/jobs/{job_id}") as ws:
                        async for message in ws:
                            if message.type != aiohttp.WSMsgType.TEXT:
                                break
                            at = time.time()
                            event = orjson.loads(message.data)
                            received += 1
                            if event.get("kind") == "progress":
                                latencies.append((at - float(event["data"]["message"])) * 1000)

                started = time.monotonic()
                with collector_paused():
                    await asyncio.wait_for(
                        asyncio.gather(*(subscriber(j) for j in ids for _ in range(SUBSCRIBERS_PER_JOB))),
                        120,
                    )
                elapsed = time.monotonic() - started
            peak_rss_mb = peak_rss(server.pid)
    latencies.sort()
    bench.record("ws-fanout", "subscribers", len(ids) * SUBSCRIBERS_PER_JOB, "clients")
    bench.record("ws-fanout", "latency p50", statistics.median(latencies), "ms")
    bench.record(
        "ws-fanout", "latency p99", statistics.quantiles(latencies, n=100)[98], "ms", target="<= 50 ms"
    )
    bench.record("ws-fanout", "delivered", received / elapsed, "events/s")
    bench.record("ws-fanout", "server peak RSS", peak_rss_mb, "MB", target="< 300 MB")


@contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection in this (measuring) process while it stamps receipts: its
    collections among the events (3-13 ms each) were stamped as the server's latency. Reference
    counting still frees the messages as they are read."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def peak_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
