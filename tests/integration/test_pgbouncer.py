"""Behind PgBouncer in transaction mode (Debian's pgbouncer, 1.18 here: no prepared statements of
its own): three worker processes and a client enqueue, claim, complete, cancel and read events
through a pool of four server connections, while their LISTEN connections go direct."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import pytest

import skiplock
from skiplock.db.pool import Limits, warn_of_unset_limits
from skiplock.queue import EnqueueRequest
from tests.support.bouncer import pgbouncer, pgbouncer_binary
from tests.support.executions import EXECUTIONS_TABLE, executions
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        pgbouncer_binary() is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
    ),
]

POOL_SIZE = 4
JOBS = 300


async def pooled_backends(db: asyncpg.Connection) -> int:
    """This database's sessions other than the direct ones (LISTEN, heartbeat, this connection)."""
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND application_name NOT IN ('skiplock-listener', 'skiplock-lease')"
        )
    )


async def direct_heartbeats(db: asyncpg.Connection) -> int:
    """Sessions named by a lease keeper: once no lease keeper goes through the pooler, only its
    direct ones (a pooled server session carries the name PgBouncer last set on it)."""
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'skiplock-lease'"
        )
    )


async def test_three_workers_and_a_client_through_pgbouncer_in_transaction_mode(
    dsn: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pgbouncer(dsn, pool_size=POOL_SIZE) as bounced:
        settings = {
            "database_pooler": "transaction",
            "listen_database_url": dsn,
            "concurrency": "10",
            "lease_s": "5",
        }
        workers = [start_worker(bounced, **settings) for _ in range(3)]
        # Each registered (its signal handlers are in place by then): a worker still importing when
        # the jobs are done and the stop comes would die of the SIGTERM's default action (-15).
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) = 3 FROM workers WHERE role = 'worker' AND stopped_at IS NULL"
            ),
            60,
        )
        # The service's own settings, as a web app beside it has them.
        monkeypatch.setenv("DATABASE_URL", bounced)
        monkeypatch.setenv("SKIPLOCK_DATABASE_POOLER", "transaction")
        monkeypatch.setenv("SKIPLOCK_LISTEN_DATABASE_URL", dsn)
        client = await skiplock.connect()
        most = heartbeats = 0
        try:
            ids = await client.enqueue_many(
                [EnqueueRequest("record_run", {"marker": str(n)}) for n in range(JOBS)]
            )
            chatty = await client.enqueue("chatty", {"lines": 3, "size": 10})
            waiting = await client.enqueue("wait", {"seconds": 60})

            async def all_done() -> bool:
                nonlocal most, heartbeats
                most = max(most, await pooled_backends(db))
                heartbeats = max(heartbeats, await direct_heartbeats(db))
                done = await db.fetchval(
                    "SELECT count(*) FROM jobs WHERE id = ANY($1::bigint[]) AND state = 'succeeded'",
                    [*ids, chatty.id],
                )
                return bool(done == JOBS + 1)

            await wait_until(all_done, 60, 0.2)
            # A result wait: the client's LISTEN connection, direct, hears the outcome.
            assert await client.wait_for_result(chatty.id, timeout_s=10) == {"lines": 3}
            await wait_until(
                lambda: db.fetchval("SELECT state = 'running' FROM jobs WHERE id = $1", waiting.id), 20
            )
            await client.cancel(waiting.id)  # the worker hears it on its own LISTEN connection
            await wait_until(
                lambda: db.fetchval("SELECT state = 'cancelled' FROM jobs WHERE id = $1", waiting.id), 10
            )
            kinds = [(e.kind, e.data.get("state")) for e in await client.events(chatty.id)]
            assert kinds == [
                ("state", "running"),
                ("log", None),
                ("log", None),
                ("log", None),
                ("state", "succeeded"),
            ]
            # Through the pooler the engine's limits come from the server's settings: none here.
            unset = await warn_of_unset_limits(client.pool, Limits(statement_s=30, lock_s=10))
            assert unset == ["lock_timeout", "statement_timeout"]
            stops = await asyncio.gather(*(asyncio.to_thread(stop_worker, w) for w in workers))
            assert stops == [0, 0, 0]
        finally:
            for worker in workers:
                stop_worker(worker)
            await client.close()
    assert await db.fetchval("SELECT count(DISTINCT job_id) FROM test_runs") == JOBS
    assert await db.fetchval("SELECT count(*) FROM test_runs") == JOBS  # each job ran once
    # Everything but LISTEN and the heartbeat went through the pooler's four server connections
    # (without it, three workers hold a pool, a claim and a lease connection each).
    assert 0 < most <= POOL_SIZE
    # Each worker's heartbeat on a connection of its own to the server: tasks holding the pooler's
    # server connections cannot delay it.
    assert heartbeats == 3


async def test_tasks_holding_every_server_connection_of_the_pooler_do_not_delay_the_heartbeat(
    dsn: str, db: asyncpg.Connection
) -> None:
    await db.execute(EXECUTIONS_TABLE)
    with pgbouncer(dsn, pool_size=2) as bounced:
        worker = start_worker(
            bounced,
            database_pooler="transaction",
            listen_database_url=dsn,
            concurrency="2",
            lease_s="1",
            rescue_interval_s="0.2",
        )
        try:
            # Two jobs, each in an open transaction on ctx.pool for 3 leases: both of the pooler's
            # server connections are theirs, and every other statement through it waits.
            await db.execute(
                "INSERT INTO jobs (task, args) SELECT 'record_execution', $1 FROM generate_series(1, 2)",
                {"seconds": 3, "hold_transaction": True, "record_dsn": dsn},
            )
            await wait_until(
                lambda: db.fetchval("SELECT count(*) = 2 FROM jobs WHERE state = 'succeeded'"), 30
            )
        finally:
            stop_worker(worker, signal.SIGKILL)
    runs = await executions(db)
    print(f"\nthe pooler's servers held 3 leases: {[(r.job_id, r.attempt, r.outcome) for r in runs]}")
    # The heartbeat went on, direct: no run was fenced and none ran again.
    assert sorted((r.attempt, r.outcome) for r in runs) == [(1, "finished"), (1, "finished")]
