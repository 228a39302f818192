"""PostgreSQL restarted (``pg_ctl restart -m fast``) under real ``skiplock serve`` processes: once
mid-drain, and three times in a row for ten rounds under a steady enqueue load on two processes.
Each process keeps claiming after every restart, every accepted job ends ``succeeded``, and the
/ws/events subscribers miss no final state (or are closed with a resume code).
``pytest -s tests/chaos`` prints the figures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from skiplock.db import connect
from tests.support.faults import PrivateServer, private_postgres
from tests.support.serving import EnqueueLoad, EventSubscriber, Probe, Served, served
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ROUNDS = 10
RESTARTS_PER_ROUND = 3


async def states(pg: PrivateServer, ids: list[int]) -> Counter[str]:
    conn = await connect(pg.dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM jobs WHERE id = ANY($1) GROUP BY 1", ids)
    finally:
        await conn.close()
    return Counter({row["state"]: row["n"] for row in rows})


async def finish_times(pg: PrivateServer, ids: list[int]) -> dict[int, float]:
    """Each finished job's finished_at, as a Unix time (the database runs on this machine's clock)."""
    conn = await connect(pg.dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, extract(epoch FROM finished_at)::float8 AS at FROM jobs"
            " WHERE id = ANY($1) AND finished_at IS NOT NULL",
            ids,
        )
    finally:
        await conn.close()
    return {row["id"]: row["at"] for row in rows}


async def all_succeeded(pg: PrivateServer, ids: list[int]) -> bool:
    return (await states(pg, ids))["succeeded"] == len(ids)


async def ready(app: Served) -> bool:
    return (await app.http.get("/ready")).status_code == 200


async def test_restart_mid_drain_every_job_succeeds_and_the_process_answers_throughout(
    tmp_path: Path,
) -> None:
    async with private_postgres() as pg, served(pg.dsn, tmp_path, CONCURRENCY="20") as app:
        async with Probe(app, ["/health", "/metrics"], every_s=0.1) as probe:
            batch = [{"task": "wait", "args": {"seconds": 0.05}} for _ in range(2000)]
            response = await app.http.post("/jobs/batch", json=batch)
            assert response.status_code == 201
            ids: list[int] = response.json()["ids"]
            started = time.monotonic()
            await wait_until(lambda: _share_done(pg, ids, 0.3), 60, 0.05)
            mid = (await states(pg, ids))["succeeded"]
            restart_at = time.monotonic()
            await asyncio.to_thread(pg.restart)
            back_at = time.monotonic()
            await wait_until(lambda: ready(app), 30, 0.1)
            ready_after_s = time.monotonic() - back_at
            await wait_until(lambda: all_succeeded(pg, ids), 60, 0.2)
            drained_s = time.monotonic() - started
        alive = app.alive
        events = app.log_events()
        final = await states(pg, ids)
    print(
        f"\n[chaos] restart mid-drain: 2000 jobs, restarted at {mid} succeeded"
        f" ({restart_at - started:.2f} s in, the restart took {back_at - restart_at:.2f} s);"
        f" /ready 200 {ready_after_s:.2f} s after; all succeeded after {drained_s:.2f} s: {dict(final)};"
        f" /health bad {probe.failures('/health')} of {probe.count('/health')},"
        f" /metrics bad {probe.failures('/metrics')} of {probe.count('/metrics')};"
        f" process alive {alive}; log events {dict(events.most_common(8))}"
    )
    assert alive
    assert final == {"succeeded": 2000}
    assert probe.failures("/health") == []
    assert probe.failures("/metrics") == []
    assert ready_after_s <= 5


async def _share_done(pg: PrivateServer, ids: list[int], share: float) -> bool:
    return (await states(pg, ids))["succeeded"] >= share * len(ids)


async def test_three_restarts_in_a_row_for_ten_rounds_two_processes_keep_claiming_and_lose_nothing(
    tmp_path: Path,
) -> None:
    # 0.2 s jobs at 20 a second need 4 slots: with 3 per process, neither can keep up alone.
    body = {"task": "wait", "args": {"seconds": 0.2}}
    claim_gaps: list[float] = []
    stalled: list[int] = []  # rounds after which a process never claimed again
    round_s: list[float] = []
    async with private_postgres() as pg, AsyncExitStack() as stack:
        apps = [await stack.enter_async_context(served(pg.dsn, tmp_path, CONCURRENCY="3")) for _ in range(2)]
        subscribers = [await stack.enter_async_context(EventSubscriber(app)) for app in apps]
        probes = [await stack.enter_async_context(Probe(app, ["/health"], every_s=0.25)) for app in apps]
        async with EnqueueLoad(apps, body) as load:
            await wait_until(lambda: len(load.accepted) >= 20, 20)
            for number in range(1, ROUNDS + 1):
                began = time.monotonic()
                for _ in range(RESTARTS_PER_ROUND):
                    await asyncio.to_thread(pg.restart)
                restarted_at = time.monotonic()
                try:
                    after = await wait_until(lambda: _started(apps), 10, 0.1)
                    await wait_until(lambda before=after: _claimed_since(apps, before), 20, 0.1)
                except AssertionError:
                    stalled.append(number)  # a process claims nothing any more: reported below
                    break
                claim_gaps.append(time.monotonic() - restarted_at)
                round_s.append(time.monotonic() - began)
                for app in apps:
                    await wait_until(lambda app=app: ready(app), 5, 0.1)
        with contextlib.suppress(AssertionError):  # reported below
            await wait_until(lambda: all_succeeded(pg, load.accepted), 60, 0.2)
        final = await states(pg, load.accepted)

        def seen_all() -> bool:
            return all(set(load.accepted) <= set(sub.finals) for sub in subscribers)

        with contextlib.suppress(AssertionError):  # reported below
            await wait_until(seen_all, 5, 0.1)
        missed = [sorted(set(load.accepted) - set(sub.finals)) for sub in subscribers]
        finished_at = await finish_times(pg, load.accepted)
        silent = [sub.silently_missed(finished_at) for sub in subscribers]
        alive = [app.alive for app in apps]
        loop_errors = [await app.metric("skiplock_loop_errors_total") for app in apps]
        events = [app.log_events() for app in apps]
    print(
        f"\n[chaos] {ROUNDS} rounds of {RESTARTS_PER_ROUND} restarts, 2 processes, POST /jobs every 50 ms:"
        f" rounds took {_span(round_s)} s; both processes claimed again"
        f" {_span(claim_gaps)} s after each round's last restart; stalled after rounds {stalled};"
        f" answers {dict(load.answers)}, accepted {len(load.accepted)}, final {dict(final)};"
        f" subscribers missed {[len(m) for m in missed]} final states, {[len(m) for m in silent]} of them"
        f" silently (closes {[dict(sub.closes) for sub in subscribers]});"
        f" /health bad {[p.failures('/health') for p in probes]};"
        f" alive {alive}; loop errors {loop_errors};"
        f" log events {[dict(e.most_common(6)) for e in events]}"
    )
    assert stalled == []
    assert alive == [True, True]
    assert [p.failures("/health") for p in probes] == [[], []]
    assert loop_errors == [0, 0]  # every error a restart causes is a database error, none unexpected
    assert final == {"succeeded": len(load.accepted)}
    assert load.bad == []
    assert silent == [[], []], "subscribers missed final states without a resume code"


async def _started(apps: list[Served]) -> list[float] | None:
    """Each process's started-jobs counter (None while one's /metrics does not answer)."""
    counts: list[float] = []
    for app in apps:
        try:
            counts.append(await app.metric("skiplock_jobs_started_total", queue="default", task="wait"))
        except Exception:
            return None
    return counts


async def _claimed_since(apps: list[Served], before: list[float]) -> bool:
    now = await _started(apps)
    return now is not None and all(a > b for a, b in zip(now, before, strict=True))


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"
