"""Deletes finished jobs older than the retention period (then finished workflows whose steps are
gone, the rows of workers offline for longer than theirs, and the rollup's old minutes), in small
batches so it never holds long locks or bloats one transaction. Every process runs it; SKIP LOCKED
shares the work."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from skiplock.queue._statements import JOBS, QUEUES, STATS, WORKERS, WORKFLOWS
from skiplock.service import Recovery, StopSignal

log = structlog.get_logger("skiplock.pruner")


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
        """Delete every expired finished job now, batch by batch; returns how many."""
        total = 0
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
