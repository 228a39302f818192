"""Re-queues jobs whose lease expired (their worker died). Runs in every process; no leader needed:
SKIP LOCKED lets several rescuers share the work without doing any job twice.

A rescued job runs again after its task's backoff, like any failed attempt. A lease is taken
only once it has been expired for the hold (``lease_hold``): a worker whose heartbeat fails holds
its runs that long at most past their deadline, then fences them (see _lease.py), so a rescue
never overlaps a run, whatever cut that worker off and whatever the server's clock says. Nor
within a lease of this rescuer's own failed round (it may have been cut off while the workers
were not).

Each round also cancels the queued jobs whose expiry passed before they started (error type
``expired``), a batch at a time, in every process alike.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog

from skiplock import metrics
from skiplock.db.moved import retry_moved
from skiplock.queue._lease import lease_hold
from skiplock.queue._statements import JOBS, WORKFLOWS, notify_requeued
from skiplock.queue.backoff import Backoff
from skiplock.queue.tasks import TaskRegistry
from skiplock.service import Recovery, StopSignal

log = structlog.get_logger("skiplock.rescuer")

_DEFAULT_BACKOFF = Backoff()  # for a task this process does not know


class Rescuer:
    name = "rescuer"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        interval_s: float,
        lease_s: float,
        registry: TaskRegistry | None = None,
        batch: int = 500,
    ) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.hold_s = lease_hold(lease_s)
        self.registry = registry or TaskRegistry()
        self.batch = batch
        self._stop = StopSignal()
        self._hold_until = float("-inf")  # monotonic: no rescue before (a lease after a failure)

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        recovery = Recovery(self.name, self._stop)
        async for _ in self._stop.every(self.interval_s):
            if time.monotonic() < self._hold_until:
                continue
            try:
                await self.rescue_once()
                await self.expire_once()
                recovery.succeeded()
            except Exception as exc:
                self._hold_until = time.monotonic() + self.lease_s
                if await recovery.failed(exc):
                    return

    def _delay(self, task: str, attempts: int) -> float:
        backoff = self.registry.get(task).backoff if task in self.registry else _DEFAULT_BACKOFF
        return backoff.delay(attempts)

    async def rescue_once(self) -> int:
        """Rescue every expired lease now; returns how many jobs were rescued."""
        total = 0
        while True:
            picked, rows = await retry_moved(self._rescue_batch)  # see skiplock.db.moved
            if rows:
                metrics.lease_rescues.inc(len(rows))
                log.warning("jobs_rescued", job_ids=[r["id"] for r in rows])
            total += len(rows)
            if len(picked) < self.batch:
                return total

    async def _rescue_batch(self) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        async with self.pool.acquire() as conn, conn.transaction():
            picked = await conn.fetch(JOBS.job_rescue_pick, self.batch, None, self.hold_s)
            rows = []
            if picked:
                # Their workflows in id order before the step-ended trigger takes them in the
                # rows' order: two rescuers ending steps of the same two workflows never wait on
                # each other in a circle (the completer does the same).
                workflows = sorted({r["workflow_id"] for r in picked if r["workflow_id"] is not None})
                if workflows:
                    await conn.execute(WORKFLOWS.workflow_lock_many, workflows)
                delays = [self._delay(r["task"], r["attempts"]) for r in picked]
                rows = await conn.fetch(JOBS.job_rescue_expired, [r["id"] for r in picked], delays)
            await notify_requeued(conn, rows)
        return picked, rows

    async def expire_once(self) -> int:
        """Cancel every queued job past its expiry that never started; returns how many."""
        total = 0
        while True:
            expired = [r["id"] for r in await self.pool.fetch(JOBS.job_expire_queued, self.batch, None)]
            if expired:
                log.info("jobs_expired", job_ids=expired)
            total += len(expired)
            if len(expired) < self.batch:
                return total

    async def stop(self) -> None:
        self._stop.set()
