"""drain: 50,000 pre-enqueued no-op jobs run by one `skiplock worker` (median of three), then by three,
then by three under a global concurrency (see GLOBAL_LIMITS) and under per-key limits (KEY_LIMITS);
and the claim's own cost, a keyed queue's against a plain one's (see claim_cost)."""

from __future__ import annotations

import asyncio
import statistics
import time
from importlib import resources

import asyncpg

from bench.floor import DRAIN_JOBS
from bench.processes import skiplock
from bench.runner import REPEATS, Bench, median_of
from skiplock.db.pool import connect
from skiplock.db.sqlfile import parse_statements

TIMEOUT_S = 300


async def run(bench: Bench) -> None:
    count = bench.size(*DRAIN_JOBS)
    one = await median_of(REPEATS, lambda: drain(bench, count, 1))
    bench.record(
        "drain", "1 process", one, "jobs/s", floor="floor.drain", target=">= 50% of floor, >= 20000 jobs/s"
    )
    three = await drain(bench, count, 3)
    bench.record("drain", "3 processes", three, "jobs/s", floor="floor.drain")
    for limit in GLOBAL_LIMITS:
        setup = f"INSERT INTO queues (name, global_concurrency) VALUES ('default', {limit})"
        limited = await drain(bench, count, 3, setup=setup)
        bench.record("drain", f"3 processes, global concurrency {limit}", limited, "jobs/s")
    for keys, per_key in KEY_LIMITS:
        setup = f"INSERT INTO queues (name, key_concurrency) VALUES ('default', {per_key})"
        keyed = await drain(bench, count, 3, setup=setup, keys=keys)
        bench.record("drain", f"3 processes, {keys} keys at {per_key} per key", keyed, "jobs/s")
    for keyed in (False, True):
        per_claim = await claim_cost(bench, count, keyed=keyed)
        what = f"{CLAIM_KEYS} keys at {CLAIM_PER_KEY} per key" if keyed else "no limit"
        bench.record("drain", f"claim of {CLAIM_BATCH}, {what}", per_claim * 1000, "ms")


#: 300: as large as three workers' default concurrency together, the limit never holds a job back
#: (what the limited claim costs: it counts the queue's running jobs, in turns); 30: a binding one.
GLOBAL_LIMITS = (300, 30)
#: (keys, jobs running at once per key): 100 keys at 5, 500 places, more than three workers run
#: at once (what the keyed claim costs: its walk over the keys, round-robin); 100 keys at 1, a
#: binding one (100 running at most).
KEY_LIMITS = ((100, 5), (100, 1))
#: claim_cost: claims of this many jobs, over this many keys at this many per key (each claim walks
#: 20 keys), against the plain claim of the same jobs in a queue without limits.
CLAIM_BATCH, CLAIM_KEYS, CLAIM_PER_KEY = 100, 100, 5
CLAIMS = 50
#: The engine's claim statements, read from its SQL file as its loader does.
CLAIM_SQL = parse_statements(resources.files("skiplock.queue.sql").joinpath("jobs.sql").read_text("utf-8"))


async def drain(
    bench: Bench,
    count: int,
    workers: int,
    task: str = "bench_noop",
    setup: str | None = None,
    keys: int | None = None,
) -> float:
    """Jobs per second; ``setup``, a statement run before the workers start (a comparison's change);
    ``keys``: the jobs' concurrency keys, that many, dealt round."""
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await fill_noop_jobs(conn, count, task, keys)
            if setup is not None:
                await conn.execute(setup)
            with skiplock(dsn, "worker", count=workers):
                deadline = time.monotonic() + TIMEOUT_S
                while await conn.fetchval("SELECT count(*) FROM jobs WHERE state <> 'succeeded'"):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"drain with {workers} workers did not finish")
                    await asyncio.sleep(0.1)
            # From the first claim to the last completion, by the database's clock: process start-up
            # and this loop's polling are not counted.
            span = await conn.fetchval(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs"
            )
        finally:
            await conn.close()
    return count / float(span)


async def fill_noop_jobs(
    conn: asyncpg.Connection, count: int, task: str = "bench_noop", keys: int | None = None
) -> None:
    """Pre-enqueue ``count`` jobs in one statement (setup, not measured), with ``keys`` concurrency
    keys dealt round (None: no key)."""
    await conn.execute(
        "INSERT INTO jobs (task, args, concurrency_key) "
        "SELECT $1, '{}', 'customer-' || (g % $3::int) FROM generate_series(1, $2) AS g",
        task,
        count,
        keys,
    )
    await conn.execute("VACUUM ANALYZE jobs")


async def claim_cost(bench: Bench, count: int, *, keyed: bool) -> float:
    """Seconds per claim of CLAIM_BATCH jobs among ``count`` queued (CLAIM_KEYS keys), the claimed
    ones ended before the next claim: job_claim_keyed under CLAIM_PER_KEY per key, or job_claim_many
    in a queue without limits. The statement alone, from this process, median of CLAIMS claims."""
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await fill_noop_jobs(conn, count, "bench_noop", CLAIM_KEYS)
            statement = CLAIM_SQL["job_claim_many"]
            if keyed:
                await conn.execute(
                    "INSERT INTO queues (name, key_concurrency) VALUES ('default', $1)", CLAIM_PER_KEY
                )
                statement = CLAIM_SQL["job_claim_keyed"]
            args: tuple[object, ...] = ("default", CLAIM_BATCH, "bench", 60.0, None, ["bench_noop"], [], 0)
            times = []
            for _ in range(CLAIMS):
                started = time.perf_counter()
                rows = await conn.fetch(statement, *args)
                times.append(time.perf_counter() - started)
                ids = [r["id"] for r in rows if r["id"] is not None]
                if len(ids) != CLAIM_BATCH:
                    raise RuntimeError(f"a claim took {len(ids)} of {CLAIM_BATCH} jobs")
                await conn.execute(
                    "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL, lease_owner = NULL, "
                    "finished_at = now() WHERE id = ANY($1)",
                    ids,
                )
        finally:
            await conn.close()
    return statistics.median(times)
