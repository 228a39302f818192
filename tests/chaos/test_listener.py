"""The LISTEN connection's backend terminated (``pg_terminate_backend``) or frozen (SIGSTOP) under a
real ``skiplock serve`` with a 30 s poll: the listener reconnects, and jobs enqueued afterwards
are woken at once, not by the poll. ``pytest -s tests/chaos`` prints the figures."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from skiplock.db import connect
from tests.support.faults import PrivateServer, private_postgres, terminate_backends
from tests.support.serving import Served, served
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

POLL_S = 30.0  # so a job woken by the poll would wait seconds, and one woken by NOTIFY does not
LISTENER = "skiplock-listener"


async def wake_latencies(pg: PrivateServer, app: Served, count: int) -> list[float]:
    """Enqueue ``count`` jobs one after another: seconds from each enqueue to its start."""
    conn = await connect(pg.dsn)
    try:
        latencies = []
        for _ in range(count):
            response = await app.http.post("/jobs", json={"task": "noop"})
            assert response.status_code == 201
            job_id = response.json()["id"]
            await wait_until(
                lambda job_id=job_id: conn.fetchval(
                    "SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id
                ),
                POLL_S + 10,
                0.02,
            )
            latencies.append(
                await conn.fetchval(
                    "SELECT extract(epoch FROM started_at - created_at)::float8 FROM jobs WHERE id = $1",
                    job_id,
                )
            )
        return latencies
    finally:
        await conn.close()


async def listener_pid(pg: PrivateServer) -> int | None:
    conn = await connect(pg.admin_dsn)
    try:
        pid: int | None = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = 'skiplock' AND application_name = $1",
            LISTENER,
        )
    finally:
        await conn.close()
    return pid


async def reconnects(app: Served) -> float:
    return await app.metric("skiplock_listener_reconnects_total")


async def test_listener_backend_terminated_reconnects_and_wakes_new_jobs_at_once(tmp_path: Path) -> None:
    async with private_postgres() as pg, served(pg.dsn, tmp_path, POLL_INTERVAL_S=str(POLL_S)) as app:
        before = await wake_latencies(pg, app, 3)
        gaps = []
        for round_ in range(1, 3):
            killed_at = time.monotonic()
            assert await terminate_backends(pg.admin_dsn, "skiplock", application_name=LISTENER) == 1
            await wait_until(lambda n=round_: _at_least(reconnects(app), n), 15, 0.05)
            gaps.append(time.monotonic() - killed_at)
        after = await wake_latencies(pg, app, 5)
        ready = (await app.http.get("/ready")).status_code
        alive = app.alive
    print(
        f"\n[chaos] listener terminated twice (poll {POLL_S:.0f} s): reconnected after"
        f" {', '.join(f'{g:.2f}' for g in gaps)} s; enqueue-to-start before {_fmt(before)} s,"
        f" after {_fmt(after)} s; /ready {ready}; alive {alive}"
    )
    assert alive
    assert ready == 200
    assert max(after) < 2.0  # woken by NOTIFY, not by the 30 s poll


async def test_listener_backend_frozen_reconnects_and_wakes_new_jobs_at_once(tmp_path: Path) -> None:
    async with private_postgres() as pg, served(pg.dsn, tmp_path, POLL_INTERVAL_S=str(POLL_S)) as app:
        frozen = await listener_pid(pg)
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)  # the server no longer answers on it: a half-open connection
        try:
            frozen_at = time.monotonic()
            await wait_until(lambda: _at_least(reconnects(app), 1), 30, 0.05)
            gap = time.monotonic() - frozen_at
            after = await wake_latencies(pg, app, 3)
        finally:
            os.kill(frozen, signal.SIGCONT)
        alive = app.alive
    print(
        f"\n[chaos] listener backend frozen (SIGSTOP, poll {POLL_S:.0f} s): reconnected after {gap:.2f} s;"
        f" enqueue-to-start after {_fmt(after)} s; alive {alive}"
    )
    assert alive
    assert max(after) < 2.0


async def _at_least(value: Awaitable[float], n: float) -> bool:
    return await value >= n


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.3f}" for v in values)
