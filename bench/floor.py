"""floor: the same work in bare asyncpg, no framework: what PostgreSQL and the driver cost."""

from __future__ import annotations

import time

import asyncpg

from bench.runner import Bench
from skiplock.db.pool import connect
from skiplock.queue._statements import JOBS
from skiplock.settings import Settings

NAME = "floor"
# The batch a draining worker claims at a time with default settings: its concurrency.
CLAIM_BATCH: int = Settings.model_fields["concurrency"].default


async def run(bench: Bench) -> None:
    await insert_notify(bench)
    await copy(bench)
    await claim_complete(bench)


async def insert_notify(bench: Bench) -> None:
    """One-row INSERT + NOTIFY per transaction, into a table shaped like jobs (no trigger)."""
    count = bench.size(5_000, 1_000)
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await conn.execute("CREATE TABLE floor_jobs (LIKE jobs INCLUDING ALL)")
            insert = await conn.prepare(
                "INSERT INTO floor_jobs (task, queue, args) VALUES ($1, $2, $3) RETURNING id"
            )
            notify = await conn.prepare("SELECT pg_notify('floor', $1)")
            started = time.perf_counter()
            for _ in range(count):
                async with conn.transaction():
                    await insert.fetchval("bench_noop", "default", {})
                    await notify.fetchval("queued:default")
            elapsed = time.perf_counter() - started
        finally:
            await conn.close()
    bench.record(NAME, "insert_notify", count / elapsed, "jobs/s")


async def copy(bench: Bench) -> None:
    """copy_records_to_table of the job rows the bulk path writes, ids from the identity column
    as a bare COPY would leave them (the bulk path must also learn them, which is its own cost)."""
    count = bench.size(100_000, 20_000)
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await conn.execute("CREATE TABLE floor_jobs (LIKE jobs INCLUDING ALL)")
            now = await conn.fetchval("SELECT now()")
            rows = [("default", "bench_noop", {}, 0, now, 3, None) for _ in range(count)]
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "floor_jobs",
                    columns=[
                        "queue",
                        "task",
                        "args",
                        "priority",
                        "run_at",
                        "max_attempts",
                        "timeout_s",
                    ],
                    records=rows,
                )
            elapsed = time.perf_counter() - started
        finally:
            await conn.close()
    bench.record(NAME, "copy", count / elapsed, "jobs/s")


async def claim_complete(bench: Bench) -> None:
    """The engine's own claim and finish statements in a tight loop on one connection."""
    count = bench.size(50_000, 10_000)
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await fill_noop_jobs(conn, count)
            # As the engine does: claims on a connection of their own, outcomes on another, both
            # durable (a claim lost in a crash would let two workers run the job at once).
            claim_conn = await connect(dsn)
            claim = await claim_conn.prepare(JOBS.job_claim_many)
            finish = await conn.prepare(JOBS.job_finish_many)
            done = 0
            started = time.perf_counter()
            while done < count:
                rows = await claim.fetch("default", CLAIM_BATCH, "floor", 30.0, None, ["bench_noop"], [])
                if not rows:
                    break
                n = len(rows)
                await finish.fetch(
                    [r["id"] for r in rows],
                    [r["attempts"] for r in rows],
                    ["succeeded"] * n,
                    [None] * n,
                    [None] * n,
                    [0.0] * n,
                    [None] * n,
                    "floor",
                )
                done += n
            elapsed = time.perf_counter() - started
            await claim_conn.close()
        finally:
            await conn.close()
    bench.record(NAME, "claim_complete", done / elapsed, "jobs/s")


async def fill_noop_jobs(conn: asyncpg.Connection, count: int, task: str = "bench_noop") -> None:
    """Pre-enqueue ``count`` jobs in one statement (setup, not measured)."""
    await conn.execute(
        "INSERT INTO jobs (task, args) SELECT $1, '{}' FROM generate_series(1, $2)", task, count
    )
    await conn.execute("VACUUM ANALYZE jobs")
