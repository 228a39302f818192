"""http-enqueue: POST /jobs against `skiplock serve --no-worker`, 32 connections for 10 s."""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp

from bench.processes import free_port, skiplock
from bench.runner import Bench

CONNECTIONS = 32
BODY = {"task": "bench_noop", "args": {}}


async def run(bench: Bench) -> None:
    duration = bench.size(10, 3)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with bench.database() as dsn:
        with skiplock(dsn, "serve", "--no-worker", "--port", str(port)):
            connector = aiohttp.TCPConnector(limit=CONNECTIONS)
            async with aiohttp.ClientSession(connector=connector) as session:
                await wait_healthy(session, base)
                latencies: list[float] = []
                errors = 0
                stop_at = time.monotonic() + duration

                async def client() -> None:
                    nonlocal errors
                    while time.monotonic() < stop_at:
                        started = time.perf_counter()
                        async with session.post(f"{base}/jobs", json=BODY) as response:
                            await response.read()
                            if response.status != 201:
                                errors += 1
                        latencies.append((time.perf_counter() - started) * 1000)

                started = time.monotonic()
                await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
                elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{errors} enqueue requests failed")
    latencies.sort()
    bench.record("http-enqueue", "rate", len(latencies) / elapsed, "req/s", target=">= 2000 req/s")
    bench.record("http-enqueue", "p50", statistics.median(latencies), "ms")
    bench.record("http-enqueue", "p99", statistics.quantiles(latencies, n=100)[98], "ms", target="<= 50 ms")


async def wait_healthy(session: aiohttp.ClientSession, base: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with session.get(f"{base}/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("skiplock serve did not become ready")
        await asyncio.sleep(0.1)
