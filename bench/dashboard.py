"""dashboard: every dashboard page and the reads under them with a million jobs in the table, a day
of the per-minute rollup (three queues) and a hundred workers' rows: each page's p50 answer time."""

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

# A day of minutes per queue, as the rollup writes them (waits around 0.1 to 3 s); rolled_to set, so
# the serve process's own rollup only keeps its last minutes up to date, as in production.
ROLLUP = """
INSERT INTO job_stats_minutes (queue, minute, succeeded, failed, cancelled, wait_buckets, wait_counts, queued)
SELECT q, date_trunc('minute', now()) - make_interval(mins => m), 500 + m % 50, m % 7, m % 3,
       '{26,30,34,38,42,46}', ARRAY[40 + m % 9, 200, 150, 90, 20, 5], 1000 + m % 300
FROM unnest(ARRAY['default', 'mail', 'reports']) AS q, generate_series(0, 1439) AS m
ON CONFLICT DO NOTHING;
UPDATE job_stats_progress SET rolled_to = now();
"""

WORKERS = """
INSERT INTO workers (id, host, pid, version, role, queues, concurrency, heartbeat_s, started_at,
                     last_heartbeat_at, stopped_at)
SELECT 'host-' || n || ':' || n || ':bench', 'host-' || n, n, '0', 'worker', '{"default": 10}', 10, 10,
       now() - make_interval(mins => n), now() - make_interval(mins => n), now() - make_interval(mins => n)
FROM generate_series(1, 100) AS n
"""

PAGES = {
    "/ui": "/ui",
    "/ui?window=1d": "/ui?window=1d",
    "/ui/queues/mail": "/ui/queues/mail",
    "/ui/queues/mail?1d": "/ui/queues/mail?window=1d",
    "/stats/series?1d": "/stats/series?window=1d",
    "/ui/workers": "/ui/workers",
    "/ui/workflows": "/ui/workflows",
    "/ui/schedules": "/ui/schedules",
    "/ui/enqueue": "/ui/enqueue",
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
            await conn.execute(ROLLUP)
            await conn.execute(WORKERS)
            await conn.execute("VACUUM ANALYZE jobs")
            await conn.execute("VACUUM ANALYZE job_stats_minutes")
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
                    bench.record(NAME, f"p50 {label}", statistics.median(timings), "ms", target="< 100 ms")
    bench.record(NAME, "jobs in the table", count, "rows")
