"""Failover under a real ``skiplock serve``: its primary crashes (``pg_ctl stop -m immediate``), the
streaming standby is promoted, and the service's address moves to it (the service's URL is a TCP
proxy, re-pointed from the old primary to the standby). The service recovers by itself, every job
it acknowledged is on the new primary and succeeds, and no job runs twice at once.

Replication is synchronous (``synchronous_standby_names = '*'``, ``synchronous_commit = on``): a
commit is acknowledged only once the standby has it. That is what makes "no acknowledged job is
lost" hold at all: with asynchronous replication a primary acknowledges commits the standby may
never receive, and a failover loses them (PostgreSQL's contract, not skiplock's; docs/scaling.md).
To make the difference show, the standby is cut off from the primary just before the crash (its
``primary_conninfo`` emptied: a partition): synchronously, every commit meanwhile waits and none is
acknowledged; asynchronously, the enqueues acknowledged meanwhile would be lost.

The address moves to the standby *before* it is promoted, so for a moment the service's connections
reach a server in recovery (read-only errors, LISTEN refused) and must be retried, not fatal.
Executions are recorded in the suite's own database, which the failover does not touch.
``pytest -s tests/chaos/test_failover.py`` prints the figures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from skiplock.db import connect
from tests.support.executions import EXECUTIONS_TABLE, executions, overlaps, summary
from tests.support.faults import (
    PrivateServer,
    private_postgres,
    replicate_synchronously,
    slow_proxy,
    streaming_replica,
)
from tests.support.serving import EnqueueLoad, Probe, Served, served
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

RECOVERY_BOUND_S = 10.0  # promotion to a job enqueued after it running; ~1-2 s measured here


async def states(dsn: str, ids: list[int]) -> Counter[str]:
    conn = await connect(dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM jobs WHERE id = ANY($1) GROUP BY 1", ids)
    finally:
        await conn.close()
    return Counter({row["state"]: row["n"] for row in rows})


async def succeeded_ids(dsn: str) -> set[int]:
    conn = await connect(dsn)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM jobs WHERE state = 'succeeded'")}
    finally:
        await conn.close()


async def partition(standby: PrivateServer, primary: PrivateServer) -> None:
    """The standby stops streaming from the primary (its replication connection dropped)."""
    conn = await asyncpg.connect(standby.admin_dsn)
    try:
        await conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    control = await asyncpg.connect(primary.admin_dsn)
    try:
        await wait_until(lambda: _no_replication(control), 10, 0.02)
    finally:
        await control.close()


async def _no_replication(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) = 0 FROM pg_stat_replication"))


#: The engine's own connections, each reconnected on its own: LISTEN, claims, the heartbeat.
OWN_CONNECTIONS = frozenset({"skiplock-listener", "skiplock-claim", "skiplock-lease"})


async def missing_sessions(server: PrivateServer) -> set[str]:
    """The engine's own connections that have no session on ``server``."""
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        rows = await conn.fetch("SELECT DISTINCT application_name FROM pg_stat_activity")
    finally:
        await conn.close()
    return set(OWN_CONNECTIONS - {row["application_name"] for row in rows})


async def _reconnected(server: PrivateServer) -> bool:
    return not await missing_sessions(server)


async def started(db: asyncpg.Connection, job_id: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) > 0 FROM test_executions WHERE job_id = $1", job_id))


async def ready(app: Served) -> bool:
    return (await app.http.get("/ready")).status_code == 200


async def test_failover_to_a_promoted_standby_loses_no_acknowledged_job_and_the_service_recovers(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(EXECUTIONS_TABLE)
    body = {"task": "record_execution", "args": {"seconds": 0.4, "record_dsn": dsn}}
    settings = {"CONCURRENCY": "20", "LEASE_S": "2", "RESCUE_INTERVAL_S": "0.2"}
    async with private_postgres() as primary, streaming_replica(primary) as standby:
        await replicate_synchronously(primary, standby)
        async with (
            slow_proxy(primary.dsn) as proxy,
            served(proxy.dsn, tmp_path, **settings) as app,
            Probe(app, ["/health"], every_s=0.2) as probe,
        ):
            async with EnqueueLoad([app], body) as load:
                await wait_until(lambda: db.fetchval("SELECT count(*) >= 10 FROM test_executions"), 20, 0.05)
                at_partition = len(load.accepted)
                await partition(standby, primary)
                await asyncio.sleep(0.5)  # asynchronously, the enqueues acknowledged now are lost
                done_on_primary = await succeeded_ids(primary.dsn)
                crashed_at = time.monotonic()
                await asyncio.to_thread(primary.stop, "immediate")
                acknowledged_before = list(load.accepted)
                proxy.repoint(standby.dsn)
                await asyncio.sleep(0.5)  # the service reaches a standby still in recovery
                await asyncio.to_thread(standby.promote)
                promoted_at = time.monotonic()
                kept = await states(standby.dsn, acknowledged_before)
                done_kept = done_on_primary <= await succeeded_ids(standby.dsn)
                # Recovered: a job enqueued after the promotion is accepted and runs.
                before = len(acknowledged_before)
                await wait_until(lambda: len(load.accepted) > before, RECOVERY_BOUND_S, 0.02)
                first_new = load.accepted[before]
                await wait_until(lambda: started(db, first_new), RECOVERY_BOUND_S, 0.02)
                recovered_s = time.monotonic() - promoted_at
                await wait_until(lambda: ready(app), 5, 0.1)
                with contextlib.suppress(AssertionError):  # reported below
                    await wait_until(lambda: _reconnected(standby), RECOVERY_BOUND_S, 0.1)
                missing = await missing_sessions(standby)
                await asyncio.sleep(0.5)  # the load goes on a while on the new primary
            with contextlib.suppress(AssertionError):  # reported below
                await wait_until(lambda: _all_succeeded(standby.dsn, load.accepted), 30, 0.2)
            final = await states(standby.dsn, load.accepted)
            alive = app.alive
            loop_errors = await app.metric("skiplock_loop_errors_total")
            events = app.log_events()
    runs = await executions(db)
    found = overlaps(runs)
    reruns = sum(n - 1 for n in Counter(run.job_id for run in runs).values())
    print(
        f"\n[chaos] failover: {len(acknowledged_before)} enqueues acknowledged before the crash"
        f" ({len(acknowledged_before) - at_partition} during the 0.5 s partition), their states on the"
        f" promoted standby {dict(kept)}; a new job ran {recovered_s:.2f} s after the promotion"
        f" ({promoted_at - crashed_at:.2f} s after the crash); {len(load.accepted)} accepted in all,"
        f" final {dict(final)}; answers {dict(load.answers)}; {len(runs)} executions, {reruns} re-runs;"
        f" {summary(found)}; /health bad {probe.failures('/health')}; loop errors {loop_errors};"
        f" log events {dict(events.most_common(8))}"
    )
    assert sum(kept.values()) == len(acknowledged_before), "acknowledged enqueues lost in the failover"
    assert done_kept, "outcomes the old primary showed are not on the new one"
    assert final == {"succeeded": len(load.accepted)}
    assert found == []
    assert missing == set(), "connections of the engine not reconnected to the new primary"
    assert load.bad == []  # every answer 2xx, or 503 with Retry-After while the database is away
    assert alive
    assert probe.failures("/health") == []
    assert loop_errors == 0
    assert recovered_s <= RECOVERY_BOUND_S


async def _all_succeeded(dsn: str, ids: list[int]) -> bool:
    return (await states(dsn, ids))["succeeded"] == len(ids)
