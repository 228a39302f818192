"""PostgreSQL stopped for 10 s under a real ``skiplock serve``: the process stays up, /health and
/metrics answer throughout, /ready is 503 while the database is gone and 200 within 5 s after it
is back, every request that needs the database is a 503 with Retry-After (never a 500), and every
accepted job ends ``succeeded``. ``pytest -s tests/chaos`` prints the figures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from skiplock.db import connect
from tests.support.faults import PrivateServer, private_postgres
from tests.support.serving import EnqueueLoad, Probe, Served, served
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

OUTAGE_S = 10.0
SCHEDULE = {"name": "nightly", "cron": "0 3 * * *", "task": "noop", "args": {}}


async def all_succeeded(pg: PrivateServer, ids: list[int]) -> bool:
    conn = await connect(pg.dsn)
    try:
        done = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND state = 'succeeded'", ids
        )
    finally:
        await conn.close()
    return bool(done == len(ids))


async def routes_while_down(app: Served, job_id: int) -> dict[str, str]:
    """Each route that needs the database: its status, and whether it said when to retry."""
    requests = {
        "POST /jobs": app.http.post("/jobs", json={"task": "noop"}),
        "GET /jobs": app.http.get("/jobs"),
        f"GET /jobs/{job_id}": app.http.get(f"/jobs/{job_id}"),
        "GET /queues": app.http.get("/queues"),
        "POST /schedules": app.http.post("/schedules", json=SCHEDULE),
    }
    answers: dict[str, str] = {}
    for route, request in requests.items():
        response = await request
        retry = response.headers.get("retry-after")
        answers[route] = f"{response.status_code}" + (f" Retry-After: {retry}" if retry else "")
    return answers


async def test_database_stopped_for_10s_then_back_the_service_recovers_and_every_job_succeeds(
    tmp_path: Path,
) -> None:
    async with private_postgres() as pg, served(pg.dsn, tmp_path, CONCURRENCY="10") as app:
        async with Probe(app, ["/health", "/metrics", "/ready"]) as probe:
            async with EnqueueLoad([app], {"task": "noop"}) as load:
                await wait_until(lambda: len(load.accepted) >= 20, 20)
                await asyncio.to_thread(pg.stop)
                stopped_at = time.monotonic()
                await wait_until(lambda: probe.answers[-1][1:] == ("/ready", "503"), 5)
                unready_after_s = time.monotonic() - stopped_at
                routes = await routes_while_down(app, load.accepted[0])
                await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))  # the fault
                starting_at = time.monotonic()
                await asyncio.to_thread(pg.start)
                back_at = time.monotonic()

                async def ready() -> bool:
                    return (await app.http.get("/ready")).status_code == 200

                await wait_until(ready, 30, 0.1)
                ready_after_s = time.monotonic() - back_at
                accepted_before = len(load.accepted)
                await wait_until(lambda: len(load.accepted) >= accepted_before + 20, 20)
            load_stopped = time.monotonic()
            await wait_until(lambda: all_succeeded(pg, load.accepted), 30, 0.2)
            drained_s = time.monotonic() - load_stopped
        alive = app.alive
        events = app.log_events()
    ready_while_down = [
        got for at, path, got in probe.answers if path == "/ready" and stopped_at + 2 < at < starting_at
    ]
    print(
        f"\n[chaos] database stopped {OUTAGE_S:.0f} s: /ready 503 after {unready_after_s:.2f} s,"
        f" 200 again {ready_after_s:.2f} s after the start;"
        f" probes /health {probe.count('/health')} (bad {probe.failures('/health')}),"
        f" /metrics {probe.count('/metrics')} (bad {probe.failures('/metrics')}),"
        f" /ready while down {sorted(set(ready_while_down))};"
        f" POST /jobs answers {dict(load.answers)}, accepted {len(load.accepted)},"
        f" all succeeded {drained_s:.2f} s after the load stopped; routes while down {routes};"
        f" process alive {alive}; log events {dict(events.most_common(8))}"
    )
    assert alive
    assert probe.failures("/health") == []
    assert probe.failures("/metrics") == []
    assert set(ready_while_down) == {"503"}
    assert ready_after_s <= 5
    assert load.bad == []
    assert all(answer.startswith("503 Retry-After") for answer in routes.values()), routes
