"""The soak's offered load, a process of its own: ``python -m bench.soak_enqueuer DSN RATE SECONDS``.

Every tick it enqueues (one ``Client.enqueue_many``, a COPY) the jobs due by then at ``RATE`` a
second since it started, so a slow tick is made up by the next one and the rate stays fixed over the
run. Each job reports progress once (``bench_progress``). On SIGTERM, or after ``SECONDS``, it stops
and prints one JSON line: jobs sent, seconds, and the most jobs one tick enqueued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.processes import env_for
from bench.tasks import bench_progress
from skiplock.db.pool import create_pool
from skiplock.queue import Client, EnqueueRequest, TaskRegistry

TICK_S = 0.1


async def offer(dsn: str, rate: float, seconds: float) -> dict[str, float]:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pool = await create_pool(dsn, min_size=1, max_size=1, reset_sessions=False)
    sent = 0
    behind = 0
    try:
        client = Client(pool, TaskRegistry([bench_progress]))
        started = time.monotonic()
        while not stop.is_set() and (elapsed := time.monotonic() - started) < seconds:
            due = int(rate * elapsed) - sent
            behind = max(behind, due)
            if due > 0:
                await client.enqueue_many([EnqueueRequest("bench_progress", {"steps": 1})] * due)
                sent += due
            next_tick = started + (int(elapsed / TICK_S) + 1) * TICK_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_tick - time.monotonic()))
        elapsed = time.monotonic() - started
    finally:
        await pool.close()
    return {"sent": sent, "seconds": round(elapsed, 3), "largest_tick": behind}


@contextlib.contextmanager
def offering(dsn: str, rate: float, seconds: float) -> Iterator[dict[str, Any]]:
    """Run this module as a process of its own; on the way out, SIGTERM it and fill the dict
    yielded with what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.soak_enqueuer", dsn, str(rate), str(seconds)],
        env=env_for(dsn),
        stdout=subprocess.PIPE,
    )
    report: dict[str, Any] = {}
    try:
        yield report
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
        lines = stdout.decode().strip().splitlines()
        report.update(json.loads(lines[-1]) if lines else {"sent": 0, "seconds": 0, "exit": proc.returncode})


if __name__ == "__main__":
    dsn, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(asyncio.run(offer(dsn, rate, seconds))), flush=True)
