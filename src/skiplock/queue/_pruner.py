"""Keeps the history to its retention: drops the history's time ranges that ended longer ago than
the retention, whole, and makes the next ones ahead of time (migration 0028); then deletes what no
range held (ended jobs in jobs_done_default), finished workflows whose steps are gone, the rows of
workers offline for longer than theirs, and the rollup's old minutes, in small batches so it never
holds long locks or bloats one transaction. Every process runs it; one at a time maintains the
ranges (the others find it done), SKIP LOCKED shares the rest."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from skiplock.queue._statements import JOBS, QUEUES, STATS, WORKERS, WORKFLOWS
from skiplock.service import Recovery, StopSignal

log = structlog.get_logger("skiplock.pruner")


# The history's range widths: the smallest of these that is at least an eighth of the retention,
# so about eight ranges hold it (a week: a day each; the shortest retention, a minute: a minute).
RANGE_WIDTHS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86_400)
RANGES_AHEAD = 2  # made this many widths ahead, so an outcome always finds its range
LOCK_WAIT_MS = 200  # a round that cannot take a range's lock in this long gives up until the next
BUSY_WARNING_ROUNDS = 5


def range_width_s(retention_s: float) -> int:
    """The width of the history's time ranges for this retention."""
    return next((w for w in RANGE_WIDTHS_S if w >= retention_s / 8), RANGE_WIDTHS_S[-1])


class Pruner:
    name = "pruner"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retention_s: float,
        interval_s: float,
        batch: int = 1000,
        worker_retention_s: float | None = None,
        stats_retention_s: float | None = None,
    ) -> None:
        self.pool = pool
        self.retention_s = retention_s
        self.worker_retention_s = worker_retention_s
        self.stats_retention_s = stats_retention_s
        self.interval_s = interval_s
        self.batch = batch
        self._busy_rounds = 0
        self._stop = StopSignal()

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        recovery = Recovery(self.name, self._stop)
        async for _ in self._stop.every(self.interval_s):
            try:
                await self.prune_once()
            except Exception as exc:  # whatever it is, the next round tries again
                if await recovery.failed(exc):
                    return
            else:
                recovery.succeeded()

    async def prune_once(self, now: object = None) -> int:
        """Drop and make the history's ranges, then delete every expired finished job left, batch
        by batch; returns how many jobs went (a dropped range's as its statistics counted them)."""
        total = await self.maintain_ranges(now)
        while not self._stop.is_set:
            status = await self.pool.execute(JOBS.job_prune_finished, self.retention_s, self.batch, now)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < self.batch:
                break
        if total:
            log.info("jobs_pruned", count=total)
        workflows = 0
        while not self._stop.is_set:  # after their steps, which go first
            status = await self.pool.execute(
                WORKFLOWS.workflow_prune_finished, self.retention_s, self.batch, now
            )
            deleted = int(status.split()[-1])
            workflows += deleted
            if deleted < self.batch:
                break
        if workflows:
            log.info("workflows_pruned", count=workflows)
        if not self._stop.is_set:  # per-key rate rings no window reaches any more
            await self.pool.execute(QUEUES.queue_key_starts_prune, now)
        if self.worker_retention_s is not None:
            await self.prune_workers()
        if self.stats_retention_s is not None and not self._stop.is_set:
            await self.prune_stats(now)
        return total

    async def maintain_ranges(self, now: object = None) -> int:
        """Make the history's next ranges, then drop the expired ones, one transaction each;
        returns the dropped job ranges' rows (estimated). A step whose lock is busy gives up until
        the next round, rather than queue the engine's statements behind it."""
        try:
            made = await self.pool.fetchval(
                JOBS.history_make, range_width_s(self.retention_s), RANGES_AHEAD, LOCK_WAIT_MS, now
            )
        except asyncpg.LockNotAvailableError:
            self._busy("make")
            made = 0
        except asyncpg.PostgresError as exc:  # the drops and the rest of the round still run
            log.warning("history_ranges_not_made", error=type(exc).__name__, message=str(exc))
            made = 0
        if made:
            log.info("history_ranges_made", count=made)
        rows = 0
        while not self._stop.is_set:
            try:
                dropped = await self.pool.fetchrow(JOBS.history_drop, self.retention_s, LOCK_WAIT_MS, now)
            except asyncpg.LockNotAvailableError:
                self._busy("drop")
                break
            self._busy_rounds = 0
            if dropped is None:
                break
            log.info(
                "history_range_dropped",
                range=dropped["name"],
                rows=dropped["estimate"],
                steps_kept=dropped["kept"],
            )
            if dropped["parent"] == "jobs_done":
                rows += int(dropped["estimate"])
        return rows

    def _busy(self, step: str) -> None:
        """A step that could not take its lock in time: logged, and a warning once it has failed
        BUSY_WARNING_ROUNDS rounds in a row (the history then outgrows its retention: something
        holds a lock on it for long, a report or a dump, see the README's History)."""
        self._busy_rounds += 1
        if self._busy_rounds >= BUSY_WARNING_ROUNDS:
            log.warning("history_ranges_busy", step=step, rounds=self._busy_rounds, wait_ms=LOCK_WAIT_MS)
        else:
            log.info("history_ranges_busy", step=step, rounds=self._busy_rounds, wait_ms=LOCK_WAIT_MS)

    async def prune_stats(self, now: object = None) -> int:
        """Delete the rollup's minutes older than the stats retention; returns how many."""
        status = await self.pool.execute(STATS.stats_prune, self.stats_retention_s, now)
        deleted = int(status.split()[-1])
        if deleted:
            log.info("stats_pruned", count=deleted)
        return deleted

    async def prune_workers(self) -> int:
        """Delete the rows of workers offline for longer than their retention; returns how many."""
        assert self.worker_retention_s is not None
        total = 0
        while not self._stop.is_set:
            status = await self.pool.execute(WORKERS.worker_prune, self.worker_retention_s, self.batch)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < self.batch:
                break
        if total:
            log.info("workers_pruned", count=total)
        return total

    async def stop(self) -> None:
        self._stop.set()
