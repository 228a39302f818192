"""Re-queues jobs whose lease expired (their worker died). Runs in every process; no leader needed:
SKIP LOCKED lets several rescuers share the work without doing any job twice."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from skiplock import metrics
from skiplock.db.pool import DB_UNAVAILABLE
from skiplock.queue._statements import JOBS
from skiplock.service import StopSignal

log = structlog.get_logger("skiplock.rescuer")


class Rescuer:
    name = "rescuer"

    def __init__(self, pool: asyncpg.Pool, *, interval_s: float, batch: int = 500) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.batch = batch
        self._stop = StopSignal()

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        async for _ in self._stop.every(self.interval_s):
            try:
                await self.rescue_once()
            except DB_UNAVAILABLE as exc:
                log.warning("rescue_failed", error=str(exc))

    async def rescue_once(self) -> int:
        """Rescue every expired lease now; returns how many jobs were rescued."""
        total = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(JOBS.job_rescue_expired, self.batch, None)
                requeued = sorted({r["queue"] for r in rows if r["state"] == "queued"})
                if requeued:
                    await conn.execute(JOBS.notify_queued, requeued)
            if rows:
                metrics.lease_rescues.inc(len(rows))
                log.warning("jobs_rescued", job_ids=[r["id"] for r in rows])
            total += len(rows)
            if len(rows) < self.batch:
                return total

    async def stop(self) -> None:
        self._stop.set()
