"""No job runs twice at once, even when leases expire (DESIGN.md guarantee 2).

Every case lets 1 s leases expire while jobs still run, under the fault that breaks them (a
starved pool, a database outage, a paused process, kill -9), with real worker processes; the
``record_execution`` task records each execution, so overlap is measured. The server crash keeps
the production lease instead: there, what must not happen is a claim lost while its run goes on.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import pytest

from skiplock.db import connect
from tests.support.executions import EXECUTIONS_TABLE, Execution, executions, overlaps, summary
from tests.support.faults import pause, private_postgres, resume
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

pytestmark = pytest.mark.slow

LEASE = {"lease_s": "1", "rescue_interval_s": "0.2"}


@contextmanager
def workers(dsn: str, count: int, **settings: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [start_worker(dsn, **LEASE, **settings) for _ in range(count)]
    try:
        yield started
    finally:
        for worker in started:
            stop_worker(worker, signal.SIGKILL)


async def enqueue(db: asyncpg.Connection, count: int, args: dict[str, Any], *, spread_s: float = 0) -> None:
    """``count`` record_execution jobs, due at once or spread evenly over ``spread_s``."""
    await db.execute(
        "INSERT INTO jobs (task, args, max_attempts, run_at)"
        " SELECT 'record_execution', $1, 20, now() + make_interval(secs => $3 * i / $2)"
        " FROM generate_series(1, $2) AS i",
        args,
        count,
        spread_s,
    )


async def succeeded(db: asyncpg.Connection, count: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) = $1 FROM jobs WHERE state = 'succeeded'", count))


def runs_per_job(runs: list[Execution]) -> collections.Counter[int]:
    return collections.Counter(run.job_id for run in runs)


@asynccontextmanager
async def reconnecting(dsn: str) -> AsyncIterator[Any]:
    """A connection for the test's own reads that survives the server going away."""
    holder: dict[str, asyncpg.Connection] = {}

    class Reader:
        async def fetchval(self, query: str, *args: Any) -> Any:
            try:
                if "conn" not in holder or holder["conn"].is_closed():
                    holder["conn"] = await connect(dsn)
                return await holder["conn"].fetchval(query, *args)
            except Exception:  # the server is away: try again on the next poll
                holder.pop("conn", None)
                return None

        async def connection(self) -> asyncpg.Connection:
            await wait_until(lambda: self.fetchval("SELECT true"), 30)
            return holder["conn"]

    try:
        yield Reader()
    finally:
        if "conn" in holder:
            holder["conn"].terminate()


async def listening(db: asyncpg.Connection, count: int) -> bool:
    """``count`` processes are ready on this database (each holds one LISTEN connection)."""
    return bool(
        await db.fetchval(
            "SELECT count(*) = $1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'LISTEN%'",
            count,
        )
    )


async def test_a_starved_pool_does_not_let_a_job_run_twice_at_once(dsn: str, db: asyncpg.Connection) -> None:
    await db.execute(EXECUTIONS_TABLE)
    with workers(dsn, 1, concurrency="4") as (healthy,):
        # A healthy process, ready to rescue and re-run, kept out of the first claims by a pause.
        await wait_until(lambda: listening(db, 1), 30)
        pause(healthy)
        try:
            with workers(dsn, 1, concurrency="4", pool_min_size="1", pool_max_size="4") as (starved,):
                # Four jobs hold each of the starved process's four pool connections for 3 leases.
                await enqueue(db, 4, {"seconds": 3, "hold_connection": True})
                await wait_until(lambda: db.fetchval("SELECT count(*) = 4 FROM test_executions"), 30)
                resume(healthy)
                await wait_until(lambda: succeeded(db, 4), 60, 0.1)
        finally:
            resume(healthy)
    runs = await executions(db)
    found = overlaps(runs)
    print(f"\npool starvation: {len(runs)} executions of 4 jobs; {summary(found)}")
    assert found == []
    assert all(run.pid == starved.pid for run in runs)  # it kept its leases: nothing was re-run


async def test_an_outage_of_two_leases_reruns_only_the_jobs_of_a_process_that_died() -> None:
    async with private_postgres(test_tables=EXECUTIONS_TABLE) as server, reconnecting(server.dsn) as reader:
        db = await reader.connection()
        with workers(server.dsn, 3, concurrency="4") as procs:
            await enqueue(db, 12, {"seconds": 5})
            await wait_until(lambda: db.fetchval("SELECT count(DISTINCT pid) = 3 FROM test_executions"), 30)
            await wait_until(lambda: db.fetchval("SELECT count(*) = 12 FROM test_executions"), 30)
            victim = procs[2]
            await asyncio.to_thread(server.stop)
            outage = time.monotonic()
            stop_worker(victim, signal.SIGKILL)
            killed_at = {victim.pid: time.time()}
            # The outage: 2 leases, and the server's start; within lease_hold(1 s) = 5 s, so live
            # workers hold their runs through it, and rescuers leave those alone.
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - outage)))
            await asyncio.to_thread(server.start)
            await wait_until(
                lambda: reader.fetchval("SELECT count(*) = 12 FROM jobs WHERE state = 'succeeded'"), 60, 0.1
            )
            db = await reader.connection()
            runs = await executions(db)
        found = overlaps(runs, killed_at)
        counts = runs_per_job(runs)
        victims = {run.job_id for run in runs if run.pid == victim.pid}
        rerun = {job for job, n in counts.items() if n > 1}
        print(
            f"\noutage of 2 leases: {len(runs)} executions of 12 jobs; {summary(found)};"
            f" re-run: {len(rerun)} jobs ({len(rerun - victims)} of live processes)"
        )
        assert found == []
        assert rerun == victims
        assert all(counts[job] == 2 for job in victims)


async def test_a_server_crash_right_after_claims_does_not_let_a_job_run_twice_at_once(
    dsn: str, db: asyncpg.Connection
) -> None:
    """A claim lost in the crash would put its job back in the queue while its run goes on; a
    worker with room claims it again as the same attempt, beside the first run. Made so that it
    shows (the first three measured: without any one of them, 8392b89 never overlapped):
    - the executions are recorded in the suite's database, not on the server that crashes: a
      record's durable commit there would flush the WAL of the claim before it;
    - the production lease (30 s, a heartbeat every 10 s): a short one's heartbeat would find the
      lost lease and stop the run before anyone claimed the job again;
    - a third worker, paused until the server is back, has room for the lost jobs;
    - the WAL writer writes asynchronous commits out every 10 s, not 0.2 s, and the crash comes
      as soon as both workers have started runs: a claim that did not wait for its WAL is lost."""
    await db.execute(EXECUTIONS_TABLE)
    async with (
        private_postgres({"wal_writer_delay": "10s"}) as server,
        reconnecting(server.dsn) as reader,
    ):
        jobs_db = await reader.connection()
        settings = {"lease_s": "30", "concurrency": "20"}
        procs = [start_worker(server.dsn, **settings) for _ in range(3)]
        spare, claimers = procs[0], procs[1:]
        try:
            await wait_until(lambda: listening(jobs_db, 3), 30)
            pause(spare)
            await enqueue(jobs_db, 40, {"seconds": 3, "record_dsn": dsn})
            await wait_until(lambda: db.fetchval("SELECT count(DISTINCT pid) = 2 FROM test_executions"), 30)
            await asyncio.to_thread(server.crash)
            crashed_at = time.time()
            resume(spare)
            await wait_until(
                lambda: reader.fetchval("SELECT count(*) = 40 FROM jobs WHERE state = 'succeeded'"), 60, 0.1
            )
        finally:
            for proc in procs:
                resume(proc)
                stop_worker(proc, signal.SIGKILL)
    runs = await executions(db)
    found = overlaps(runs)
    in_flight = [run for run in runs if run.started_at < crashed_at < (run.ended_at or math.inf)]
    repeated = [key for key, n in collections.Counter((r.job_id, r.attempt) for r in runs).items() if n > 1]
    print(
        f"\nserver crash right after claims: {len(runs)} executions of 40 jobs, {len(in_flight)} in flight"
        f" at the crash; {summary(found)}; attempts run twice: {len(repeated)}"
    )
    assert {run.pid for run in in_flight} == {proc.pid for proc in claimers}  # the crash hit runs
    assert found == []
    assert repeated == []  # no claim was lost: none of its attempts ran again


async def test_a_paused_process_stops_its_jobs_and_writes_nothing_after_the_pause(
    dsn: str, db: asyncpg.Connection
) -> None:
    await db.execute(EXECUTIONS_TABLE)
    await enqueue(db, 4, {"seconds": 4, "report": True})
    with workers(dsn, 1, concurrency="4") as (paused,):
        await wait_until(lambda: db.fetchval("SELECT count(*) = 4 FROM test_executions"), 30)
        with workers(dsn, 1, concurrency="4") as (other,):
            pause(paused)
            paused_at = time.time()
            try:
                # Paused for 2 leases at least, and until the other process runs every job.
                await asyncio.sleep(2)
                await wait_until(
                    lambda: db.fetchval("SELECT count(*) = 4 FROM test_executions WHERE pid = $1", other.pid),
                    30,
                )
            finally:
                resumed_at = time.time()
                resume(paused)
            await wait_until(lambda: succeeded(db, 4), 60, 0.1)
            await asyncio.sleep(0.5)  # anything the resumed process still wanted to write
    runs = await executions(db)
    found = overlaps(runs)
    # Its runs from before the pause; a job it claims afresh after it (one the other process let go)
    # is a new attempt, recorded as its own execution.
    before = [run for run in runs if run.pid == paused.pid and run.started_at < paused_at]
    stale = [run for run in before if (run.ended_at or 0) > paused_at]
    late_events = await db.fetchval(
        "SELECT count(*) FROM job_events WHERE kind = 'progress' AND data->>'message' = ANY($1::text[])"
        " AND at > to_timestamp($2)",
        [f"pid {paused.pid} attempt {run.attempt}" for run in before],
        resumed_at,
    )
    print(
        f"\npaused process: {len(runs)} executions of 4 jobs; {summary(found)};"
        f" its executions working after the pause: {len(stale)}, its progress events after it: {late_events}"
    )
    assert found == []
    assert stale == []
    assert late_events == 0
    assert runs_per_job([r for r in runs if r.pid == other.pid]) == {job: 1 for job in runs_per_job(runs)}


async def test_kill_9_every_few_seconds_every_job_succeeds_and_none_runs_twice_at_once(
    dsn: str, db: asyncpg.Connection
) -> None:
    count = 10_000
    await db.execute(EXECUTIONS_TABLE)
    await enqueue(db, count, {"seconds": 0.05})
    killed_at: dict[int, float] = {}
    settings = {**LEASE, "concurrency": "30"}
    procs = [start_worker(dsn, **settings) for _ in range(3)]
    rng = random.Random(14)

    async def remaining() -> int:
        return int(await db.fetchval("SELECT count(*) FROM jobs WHERE state <> 'succeeded'"))

    async def working() -> list[int]:
        """The indexes of the processes that have run a job (so are up and claiming)."""
        pids = await db.fetchval(
            "SELECT array_agg(DISTINCT pid) FROM test_executions WHERE pid = ANY($1::int[])",
            [proc.pid for proc in procs],
        )
        return [i for i, proc in enumerate(procs) if proc.pid in (pids or [])]

    async def two_working_or_nearly_done() -> bool:
        return len(await working()) >= 2 or await remaining() <= 300

    try:
        # A kill every few seconds, of a process with jobs in flight, paced by the run as well as
        # the clock: only while two processes or more are working (a replacement may take seconds
        # to start on a loaded machine), and none once the last few hundred jobs are left, so
        # the run can finish.
        while await remaining() > 300:
            await asyncio.sleep(1.5 + rng.random())  # the fault's own rhythm, not a wait for a condition
            await wait_until(two_working_or_nearly_done, 60, 0.1)
            if await remaining() <= 300:
                break
            index = rng.choice(await working())
            stop_worker(procs[index], signal.SIGKILL)
            killed_at[procs[index].pid] = time.time()
            procs[index] = start_worker(dsn, **settings)
        # The end: a dead process's jobs wait a lease and the rescuers' hold (5 s). It fails only
        # when nothing succeeds for 30 s, not on a fixed total.
        left, still = await remaining(), time.monotonic()
        while left:
            await asyncio.sleep(0.2)
            now_left = await remaining()
            if now_left < left:
                left, still = now_left, time.monotonic()
            assert time.monotonic() - still < 30, f"{left} jobs not succeeded, none for 30 s"
    finally:
        for proc in procs:
            stop_worker(proc, signal.SIGKILL)
    runs = await executions(db)
    found = overlaps(runs, killed_at)
    print(f"\nkill -9: {len(killed_at)} kills, {len(runs)} executions of {count} jobs; {summary(found)}")
    assert len(killed_at) >= 3  # the faults happened (5-14 kills in runs here, fewer on a fast machine)
    assert found == []
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE state <> 'succeeded'") == 0
