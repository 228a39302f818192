"""http-batch: POST /jobs/batch with 10,000 jobs a request against `skiplock serve --no-worker`."""

from __future__ import annotations

import time

import aiohttp
import orjson

from bench.http_enqueue import wait_healthy
from bench.processes import free_port, skiplock
from bench.runner import Bench

PER_REQUEST = 10_000


async def run(bench: Bench) -> None:
    requests = bench.size(10, 3)
    body = orjson.dumps([{"task": "bench_noop", "args": {}}] * PER_REQUEST)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with bench.database() as dsn:
        with skiplock(dsn, "serve", "--no-worker", "--port", str(port)):
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, base)
                started = time.perf_counter()
                for _ in range(requests):
                    async with session.post(
                        f"{base}/jobs/batch", data=body, headers={"content-type": "application/json"}
                    ) as response:
                        if response.status != 201:
                            raise RuntimeError(f"batch refused: {response.status} {await response.text()}")
                        await response.read()
                elapsed = time.perf_counter() - started
    bench.record("http-batch", "rate", requests * PER_REQUEST / elapsed, "jobs/s", target=">= 50000 jobs/s")
