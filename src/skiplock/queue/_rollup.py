"""Writes the per-minute rollup the dashboard's charts read (migration 0023): per queue and
minute, the jobs finished by outcome, their waits in log buckets, and the queue's depth.

Every process runs it; one at a time writes (job_stats_progress's row lock, SKIP LOCKED: the
others skip their turn). A turn recomputes the minutes since the last run's, a little before it for
late commits, from jobs_finished_at_idx's range (never a scan of jobs), and replaces their rows:
a rerun, or two replicas one after the other, write the same numbers. The pruner deletes minutes
older than the stats retention."""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg
import structlog

from skiplock.db.pool import AnyConnection
from skiplock.queue._statements import STATS
from skiplock.service import Recovery, StopSignal

log = structlog.get_logger("skiplock.rollup")

#: Minutes recomputed before where the last run got: a job's finished_at is its transaction's
#: start, so one that committed after the last run read its minute is counted at the next.
LOOKBACK_S = 120.0
#: A first run (or one after a long outage) reaches this far back, at most a day: the charts' window.
FIRST_S = 3600.0
MAX_S = 86_400.0
#: Minutes per transaction, so a long catch-up commits as it goes.
CHUNK_S = 3600.0
#: A turn's statements end past this (a turn is one index range and one count of queued jobs).
TIMEOUT_MS = 30_000


class Rollup:
    name = "rollup"

    def __init__(self, pool: asyncpg.Pool, *, interval_s: float) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self._stop = StopSignal()

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        recovery = Recovery(self.name, self._stop)
        async for _ in self._stop.every(self.interval_s):
            try:
                await self.roll_once()
            except Exception as exc:  # whatever it is, the next round tries again
                if await recovery.failed(exc):
                    return
            else:
                recovery.succeeded()

    async def roll_once(self, now: datetime | None = None) -> bool:
        """Recompute the minutes since the last run (up to ``now``, default the database's clock)
        and sample every queue's depth; False when another replica held the turn."""
        for _ in range(int(MAX_S // CHUNK_S) + 2):  # a day's catch-up, whatever happens
            if self._stop.is_set:
                break
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(STATS.stats_timeout, TIMEOUT_MS)
                window = await conn.fetchrow(STATS.stats_window, now, LOOKBACK_S, FIRST_S, MAX_S, CHUNK_S)
                if window is None:
                    return False
                await conn.execute(STATS.stats_roll, window["start"], window["until"])
                caught_up = window["until"] >= window["now"]
                if caught_up:
                    await self._sample_depth(conn, window["now"].replace(second=0, microsecond=0))
                await conn.execute(STATS.stats_advance, window["until"])
            if caught_up:
                return True
        return False

    @staticmethod
    async def _sample_depth(conn: AnyConnection, minute: datetime) -> None:
        """The minute's depth sample in a savepoint of its own: a count of queued jobs that fails
        (past its time limit on a huge backlog, a lock) loses that sample alone, not the turn's
        outcomes, which else would fail the same way at every turn and stop the charts."""
        try:
            async with conn.transaction():
                await conn.execute(STATS.stats_sample_depth, minute)
        except asyncpg.PostgresError as exc:
            log.warning("rollup_depth_sample_failed", minute=minute.isoformat(), error=str(exc))

    async def stop(self) -> None:
        self._stop.set()
