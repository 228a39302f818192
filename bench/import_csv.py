"""import-csv: a generated CSV streamed to `skiplock serve` and loaded by its import_csv job.

End to end (upload → job done) in rows/s, and the server's memory growth: its peak RSS (VmHWM)
at the end less its RSS once ready, so a server that held the file would show it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.http_enqueue import wait_healthy
from bench.processes import free_port, skiplock
from bench.runner import Bench

BAD_EVERY = 1000  # one row in this many has a bad price, so the failed-rows path runs too
READ_BYTES = 256 * 1024


def generate(path: Path, rows: int) -> int:
    """Write a CSV of ``rows`` items (unique skus); returns its size in bytes."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("sku,name,category,price,quantity,updated_at\n")
        batch = []
        for n in range(rows):
            price = "n/a" if n % BAD_EVERY == BAD_EVERY - 1 else f"{n % 9973}.{n % 100:02d}"
            batch.append(
                f"SKU{n:08d},Item number {n},category {n % 50},{price},{n % 500},2024-05-01T12:00:00Z\n"
            )
            if len(batch) == 10_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    return path.stat().st_size


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(READ_BYTES):
            yield chunk


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


async def wait_finished(session: aiohttp.ClientSession, url: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(url) as response:
            body: dict[str, Any] = await response.json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.05)
    raise TimeoutError(f"import not finished after {timeout_s:g}s")


async def run(bench: Bench) -> None:
    rows = bench.size(1_000_000, 100_000)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="skbench-csv-") as tmp:
        path = Path(tmp) / "items.csv"
        size = generate(path, rows)
        async with bench.database() as dsn:
            with skiplock(dsn, "serve", "--port", str(port)) as (server,):
                async with aiohttp.ClientSession() as session:
                    await wait_healthy(session, base)
                    rss_ready_kib = status_kib(server.pid, "VmRSS")
                    started = time.perf_counter()
                    async with session.post(
                        f"{base}/imports", data=file_chunks(path), headers={"content-type": "text/csv"}
                    ) as response:
                        if response.status != 202:
                            raise RuntimeError(f"upload refused: {response.status} {await response.text()}")
                        created = await response.json()
                    uploaded = time.perf_counter() - started
                    info = await wait_finished(session, f"{base}/imports/{created['import_id']}", 600)
                    elapsed = time.perf_counter() - started
                    growth_mb = (status_kib(server.pid, "VmHWM") - rss_ready_kib) / 1024
    if info["state"] != "succeeded" or info["rows"] != rows:
        raise RuntimeError(f"import did not load every row: {info}")
    bench.record("import-csv", "rows", rows, "rows")
    bench.record("import-csv", "file", size / 2**20, "MiB")
    bench.record("import-csv", "upload", uploaded, "s")
    bench.record("import-csv", "rate (end to end)", rows / elapsed, "rows/s", target=">= 150000 rows/s")
    bench.record("import-csv", "server RSS growth", growth_mb, "MB", target="< 100 MB")
