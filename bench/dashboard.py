"""dashboard: the dashboard's pages and the reads under them with a million jobs in the table."""

from __future__ import annotations

import statistics
import time

import aiohttp

from bench.http_enqueue import wait_healthy
from bench.processes import free_port, skiplock
from bench.runner import Bench
from skiplock.db.pool import connect

NAME = "dashboard"

# Mostly finished work, as a busy service's table looks between prunes; ids spread over tasks/queues.
FILL = """
INSERT INTO jobs (queue, task, state, attempts, errors, created_at, started_at, finished_at, run_at)
SELECT (ARRAY['default', 'mail', 'reports'])[1 + n % 3],
       (ARRAY['send_mail', 'render', 'sync', 'resize', 'rare'])[1 + (n % 1000 = 0)::int * 4 + (n % 4)],
       s.state,
       1,
       CASE WHEN s.state = 'failed'
            THEN jsonb_build_array(jsonb_build_object('attempt', 1, 'type',
                 (ARRAY['TimeoutError', 'ValueError'])[1 + n % 2], 'message', 'boom', 'at', now()))
            ELSE '[]'::jsonb END,
       now() - make_interval(secs => n % 7200),
       now() - make_interval(secs => n % 7200),
       CASE WHEN s.state IN ('queued', 'running') THEN NULL ELSE now() - make_interval(secs => n % 7200) END,
       now() - make_interval(secs => n % 7200)
FROM generate_series(1, $1) AS n,
     LATERAL (SELECT (CASE WHEN n % 20 = 0 THEN 'queued' WHEN n % 20 = 1 THEN 'failed'
                           WHEN n % 20 = 2 THEN 'cancelled' ELSE 'succeeded' END)::job_state AS state) AS s
"""

PAGES = {
    "/ui": "/ui",
    "/queues (uncached)": "/queues",
    "/ui/jobs": "/ui/jobs",
    "/ui/jobs?state=": "/ui/jobs?state=failed",
    "/ui/jobs?task=": "/ui/jobs?task=render",
    "/ui/jobs?task=(rare)": "/ui/jobs?task=rare",
    "/ui/failures": "/ui/failures",
}


async def run(bench: Bench) -> None:
    count = bench.size(1_000_000, 100_000)
    requests = bench.size(20, 5)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await conn.execute(FILL, count)
            await conn.execute("VACUUM ANALYZE jobs")
        finally:
            await conn.close()
        with skiplock(dsn, "serve", "--no-worker", "--no-scheduler", "--port", str(port)):
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, base)
                for label, path in PAGES.items():
                    timings = []
                    for _ in range(requests):
                        started = time.perf_counter()
                        async with session.get(base + path) as response:
                            await response.read()
                            if response.status != 200:
                                raise RuntimeError(f"{path}: {response.status}")
                        timings.append((time.perf_counter() - started) * 1000)
                    bench.record(NAME, f"p50 {label}", statistics.median(timings), "ms", target="< 200 ms")
    bench.record(NAME, "jobs in the table", count, "rows")
