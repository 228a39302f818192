"""floor: the engine's design in bare SQL on a lean table of its own, through bare asyncpg.

The same guarantees, minimally: a claim takes a lease with ``FOR UPDATE SKIP LOCKED`` and counts
the attempt, a completion is guarded by state, attempt and owner, every commit is durable, and an
insert wakes the claimers through one statement-level NOTIFY. Nothing else: no events, no
foreign keys, one index. Every engine figure in the table is shown against the floor of the same
run, so the distance to what PostgreSQL and the driver allow is measured, not assumed. Nothing
here uses the engine's statements or tables.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import asyncpg
import orjson

from bench.runner import REPEATS, Bench, median_of

NAME = "floor"

# Counts (full, quick) the engine's workloads share, so an engine figure and its floor measure the
# same amount of work.
SINGLE_JOBS = (5_000, 1_000)
BULK_JOBS = (100_000, 20_000)
DRAIN_JOBS = (50_000, 10_000)
LATENCY_JOBS = (500, 100)
LATENCY_GAP_S = 0.010

CLAIM_BATCH = 200
LEASE_S = 30.0
OWNER = "floor"
QUEUE = "default"
CHANNEL = "floor_jobs"
POLL_S = 1.0  # the fallback for a lost notification, as the engine's poll is
# The claimer runs at most this many batches ahead of the completer: what a worker holds is bounded.
AHEAD = 1

SCHEMA = f"""
CREATE TABLE floor_jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text        NOT NULL DEFAULT 'default',
    priority         smallint    NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    state            text        NOT NULL DEFAULT 'queued',
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 3,
    lease_owner      text,
    lease_expires_at timestamptz,
    args             jsonb       NOT NULL DEFAULT '{{}}',
    result           jsonb
);
CREATE INDEX floor_jobs_claim_idx ON floor_jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE FUNCTION floor_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', q.queue) FROM (SELECT DISTINCT queue FROM inserted) AS q;
    RETURN NULL;
END
$$;
CREATE TRIGGER floor_jobs_notify AFTER INSERT ON floor_jobs
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION floor_jobs_notify();
"""

FILL = "INSERT INTO floor_jobs (args) SELECT '{}' FROM generate_series(1, $1)"

INSERT = "INSERT INTO floor_jobs (queue, args) VALUES ($1, $2) RETURNING id"

CLAIM = """
WITH picked AS (
    SELECT id FROM floor_jobs
    WHERE state = 'queued' AND queue = $1 AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE floor_jobs AS j
SET state = 'running', attempts = j.attempts + 1,
    lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4)
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.attempts, j.args
"""

# No join: the rows are found by `id = ANY($1)` through the primary key and each takes its values at
# its id's place in $1. Joined to unnest(...), the plan flipped with the table's statistics (all rows
# queued at the last ANALYZE, so 'running' reads as one row): unnest rescanned per row, or a seq scan,
# 6 ms a batch of 200 against 0.3 ms.
COMPLETE = """
UPDATE floor_jobs AS j
SET state = 'succeeded', result = ($3::text[])[array_position($1::bigint[], j.id)]::jsonb,
    lease_owner = NULL, lease_expires_at = NULL
WHERE j.id = ANY($1::bigint[]) AND j.state = 'running'
  AND j.attempts = ($2::int[])[array_position($1::bigint[], j.id)] AND j.lease_owner = $4
"""

#: What a job's run gives its outcome: the claimed row and when the claim came back → result JSON.
RunJob = Callable[[asyncpg.Record, float], str | None]
#: A claimed batch and when its claim came back; None when the claimer is done.
Batch = tuple[list[asyncpg.Record], float] | None


async def run(bench: Bench) -> None:
    await insert_notify(bench)
    await copy(bench)
    await drain(bench)
    await latency(bench)


async def connect(dsn: str) -> asyncpg.Connection:
    """A bare asyncpg connection, jsonb through orjson; commits durable whatever the server says."""
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": "skiplock-floor", "synchronous_commit": "on"}
    )
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + orjson.dumps(value),
        decoder=lambda data: orjson.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )
    return conn


@asynccontextmanager
async def lean_database(bench: Bench) -> AsyncIterator[str]:
    """A fresh database with the lean table in it."""
    async with bench.database() as dsn:
        conn = await connect(dsn)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()
        yield dsn


async def insert_notify(bench: Bench) -> None:
    """One-row INSERT per transaction, the statement trigger's NOTIFY in it."""
    count = bench.size(*SINGLE_JOBS)
    async with lean_database(bench) as dsn:
        conn = await connect(dsn)
        try:
            started = time.perf_counter()
            for _ in range(count):
                await conn.fetchval(INSERT, QUEUE, {})
            elapsed = time.perf_counter() - started
        finally:
            await conn.close()
    bench.record(NAME, "insert_notify", count / elapsed, "jobs/s")


async def copy(bench: Bench) -> None:
    bench.record(NAME, "copy", await median_of(REPEATS, lambda: copy_once(bench)), "jobs/s")


async def copy_once(bench: Bench) -> float:
    """copy_records_to_table into the lean table, ids from the identity column as a bare COPY
    leaves them (the engine's bulk path must also learn them, which is its own cost)."""
    count = bench.size(*BULK_JOBS)
    async with lean_database(bench) as dsn:
        conn = await connect(dsn)
        try:
            now = await conn.fetchval("SELECT now()")
            rows: list[tuple[object, ...]] = [(QUEUE, 0, now, 3, {}) for _ in range(count)]
            started = time.perf_counter()
            await conn.copy_records_to_table(
                "floor_jobs", columns=["queue", "priority", "run_at", "max_attempts", "args"], records=rows
            )
            elapsed = time.perf_counter() - started
        finally:
            await conn.close()
    return count / elapsed


async def drain(bench: Bench) -> None:
    bench.record(NAME, "drain", await median_of(REPEATS, lambda: drain_once(bench)), "jobs/s")


async def drain_once(bench: Bench) -> float:
    """Pre-filled no-op jobs claimed 200 at a time and completed in batches, by two loops on
    connections of their own, until none is left."""
    count = bench.size(*DRAIN_JOBS)
    async with lean_database(bench) as dsn:
        conn = await connect(dsn)
        try:
            await conn.execute(FILL, count)
            await conn.execute("VACUUM ANALYZE floor_jobs")
        finally:
            await conn.close()
        worker = Worker(dsn, lambda row, claimed_at: None, idle=False)
        done = await worker.run()
    if done != count:
        raise RuntimeError(f"the floor's drain completed {done} of {count} jobs")
    # From the first claim to the last completion, as bench/drain.py times the engine.
    return done / (worker.last_completed - worker.first_claimed)


async def latency(bench: Bench) -> None:
    """An idle worker that claims when notified; jobs enqueued ``LATENCY_GAP_S`` apart, each
    stamped with time.time() just before its INSERT and its latency taken when its claim returns,
    as bench/latency.py measures the engine's. (The worker shares this process's event loop, idle
    between inserts: a few microseconds at most against the floor, not for it.)"""
    count = bench.size(*LATENCY_JOBS)
    async with lean_database(bench) as dsn:
        conn = await connect(dsn)
        worker = Worker(dsn, stamp_latency, idle=True)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(worker.run())
                try:
                    # The first job waits for the worker to be listening (or its poll), as the
                    # engine's warm-up job does.
                    await wait_done(conn, [await conn.fetchval(INSERT, QUEUE, stamped())])
                    ids = []
                    for _ in range(count):
                        ids.append(await conn.fetchval(INSERT, QUEUE, stamped()))
                        await asyncio.sleep(LATENCY_GAP_S)
                    await wait_done(conn, ids)
                finally:
                    worker.stop()
            rows = await conn.fetch(
                "SELECT (result->>'latency_ms')::float8 AS ms FROM floor_jobs WHERE id = ANY($1)", ids
            )
        finally:
            await conn.close()
    latencies = sorted(r["ms"] for r in rows)
    bench.record(NAME, "latency p50", statistics.median(latencies), "ms")
    bench.record(NAME, "latency p99", statistics.quantiles(latencies, n=100)[98], "ms")


def stamped() -> dict[str, float]:
    return {"enqueued_at": time.time()}


def stamp_latency(row: asyncpg.Record, claimed_at: float) -> str:
    return orjson.dumps({"latency_ms": (claimed_at - row["args"]["enqueued_at"]) * 1000}).decode()


async def wait_done(conn: asyncpg.Connection, ids: list[int], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while await conn.fetchval(
        "SELECT count(*) FROM floor_jobs WHERE id = ANY($1) AND state <> 'succeeded'", ids
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the floor's latency jobs did not finish")
        await asyncio.sleep(0.05)


class Worker:
    """A claimer handing batches to a completer through a queue, each on its own connection, so a
    claim and the previous batch's completion overlap as the engine's do. A draining worker
    (``idle=False``) ends when a claim finds nothing; an idle one LISTENs and claims on every
    notification (or every ``POLL_S``) until :meth:`stop`."""

    def __init__(self, dsn: str, run_job: RunJob, *, idle: bool) -> None:
        self._dsn = dsn
        self._run_job = run_job
        self._idle = idle
        self._wake = asyncio.Event()
        self._stopping = False
        # perf_counter when the first claim was sent and when the last completion was committed.
        self.first_claimed = self.last_completed = 0.0

    async def run(self) -> int:
        """Work until done or stopped; the number of jobs completed."""
        claims, completions = await connect(self._dsn), await connect(self._dsn)
        listener = await connect(self._dsn) if self._idle else None
        try:
            if listener is not None:
                await listener.add_listener(CHANNEL, lambda *_: self._wake.set())
            batches: asyncio.Queue[Batch] = asyncio.Queue(AHEAD)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._claim(claims, batches))
                done = tasks.create_task(self._complete(completions, batches))
            return done.result()
        finally:
            for conn in (claims, completions, listener):
                if conn is not None:
                    await conn.close()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _claim(self, conn: asyncpg.Connection, batches: asyncio.Queue[Batch]) -> None:
        claim = await conn.prepare(CLAIM)
        self.first_claimed = time.perf_counter()
        while not self._stopping:
            rows = await claim.fetch(QUEUE, CLAIM_BATCH, OWNER, LEASE_S)
            if rows:
                await batches.put((rows, time.time()))
                continue
            if not self._idle:
                break
            # Cleared before the next claim: a notification from now on wakes the wait after it.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()
        await batches.put(None)

    async def _complete(self, conn: asyncpg.Connection, batches: asyncio.Queue[Batch]) -> int:
        done = 0
        while (batch := await batches.get()) is not None:
            rows, claimed_at = batch
            status = await conn.execute(
                COMPLETE,
                [r["id"] for r in rows],
                [r["attempts"] for r in rows],
                [self._run_job(r, claimed_at) for r in rows],
                OWNER,
            )
            # Every outcome stored, or the guard refused one and the floor is wrong.
            written = int(status.split()[-1])
            if written != len(rows):
                raise RuntimeError(f"the floor stored {written} of {len(rows)} outcomes")
            done += written
            self.last_completed = time.perf_counter()
        return done
