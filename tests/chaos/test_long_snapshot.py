"""A snapshot held open elsewhere (``BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1`` on another
connection) while 20,000 jobs drain through a real ``skiplock serve``: the drain keeps its speed,
only vacuum is held back (dead rows stay until the snapshot ends), and /metrics shows the
snapshot's age. The snapshot is held through three drains of 20,000 (about 10 s on this machine,
not 60 s: the suite must stay short); ``pytest -s tests/chaos`` prints the figures, the claim
index's entries read per job among them (dead ones included: the cost a held snapshot adds)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from skiplock.db import connect
from tests.support.faults import PrivateServer, private_postgres
from tests.support.serving import Served, sample, served
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

JOBS = 20_000
DRAINS_HELD = 3


async def drain(pg: PrivateServer, conn: asyncpg.Connection) -> float:
    """Enqueue JOBS noop jobs in one statement; seconds until every one has succeeded."""
    first = await conn.fetchval(
        "WITH made AS (INSERT INTO jobs (task, args) SELECT 'noop', '{}' FROM generate_series(1, $1)"
        " RETURNING id) SELECT min(id) FROM made",
        JOBS,
    )
    await conn.execute("SELECT pg_notify('skiplock', 'queued:default')")
    started = time.monotonic()
    await wait_until(
        lambda: conn.fetchval(
            "SELECT count(*) = $2 FROM jobs WHERE id >= $1 AND state = 'succeeded'", first, JOBS
        ),
        50,
        0.2,
    )
    return time.monotonic() - started


async def claim_index_reads(conn: asyncpg.Connection) -> int:
    """Entries the scans of the claim index have read so far, dead ones included (as the server's
    processes last reported them: a busy one reports about once a second, an idle one soon after)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    read = await conn.fetchval(
        "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'jobs_claim_idx'"
    )
    return int(read)


async def reads_per_job(conn: asyncpg.Connection, since: int, drains: int) -> float:
    await asyncio.sleep(2)  # the claim connection, idle now, reports its last reads
    return (await claim_index_reads(conn) - since) / (JOBS * drains)


async def dead_rows(conn: asyncpg.Connection) -> int:
    await conn.execute("VACUUM jobs")  # removes what it may: with a snapshot open, little
    # jobs is partitioned (migration 0028): its dead rows are its partitions' (jobs_live's, mostly).
    return int(
        await conn.fetchval(
            "SELECT sum(s.n_dead_tup) FROM pg_partition_tree('jobs') AS p"
            " JOIN pg_stat_user_tables AS s ON s.relid = p.relid WHERE p.isleaf"
        )
    )


async def oldest_transaction_age(app: Served) -> float:
    text = (await app.http.get("/metrics")).text
    return sample(text, "skiplock_db_oldest_transaction_age_seconds")


async def test_a_snapshot_held_open_during_a_drain_slows_nothing_but_vacuum(tmp_path: Path) -> None:
    async with private_postgres() as pg, served(pg.dsn, tmp_path, CONCURRENCY="50") as app:
        conn = await connect(pg.dsn)
        holder = await asyncpg.connect(pg.dsn)  # a client of its own, with no idle limit
        try:
            reads = await claim_index_reads(conn)
            free_s = await drain(pg, conn)
            free_reads = await reads_per_job(conn, reads, 1)
            dead_free = await dead_rows(conn)
            reads = await claim_index_reads(conn)
            await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
            held_at = time.monotonic()
            # Drain after drain under the one snapshot: each leaves every row version it made dead
            # and unremovable, so a claim that had to step over them would slow down drain by drain.
            held = [await drain(pg, conn) for _ in range(DRAINS_HELD)]
            held_reads = await reads_per_job(conn, reads, DRAINS_HELD)
            dead_held = await dead_rows(conn)
            age = await wait_until(lambda: _aged(app, sum(held) / 2), 15, 0.2)
            await holder.execute("COMMIT")
            held_for_s = time.monotonic() - held_at
            dead_after = await dead_rows(conn)
        finally:
            await holder.close()
            await conn.close()
        alive = app.alive
    print(
        f"\n[chaos] {JOBS:,} jobs drained in {free_s:.2f} s without a snapshot; with one held open,"
        f" {DRAINS_HELD} drains of {JOBS:,} took {', '.join(f'{h:.2f}' for h in held)} s"
        f" (last {held[-1] / free_s:.2f}x the drain without, {held[-1] / held[0]:.2f}x the first held;"
        f" held {held_for_s:.1f} s in all, /metrics said {age:.1f} s);"
        f" claim index entries read per job: {free_reads:.1f} without, {held_reads:.1f} with the snapshot;"
        f" dead rows in jobs after VACUUM: {dead_free:,} without, {dead_held:,} with the snapshot,"
        f" {dead_after:,} once it ended; alive {alive}"
    )
    assert alive
    assert max(held) < 2 * free_s + 5  # the same speed, give or take a busy machine
    # Claims go on where the last ended: a full claim steps over the dead entries once per poll
    # interval (0.5 s here), not every claim (about 600 entries a job when each did).
    assert held_reads < 100
    assert dead_held > JOBS * DRAINS_HELD  # what vacuum could not remove while the snapshot was open …
    assert dead_after < dead_held / 10  # … it removed once the snapshot ended


async def _aged(app: Served, at_least_s: float) -> float | None:
    age = await oldest_transaction_age(app)
    return age if age >= at_least_s else None
