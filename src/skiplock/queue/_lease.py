"""Keeps this process's running jobs honest: leases and cancel requests.

One heartbeat statement extends every lease we hold; a job missing from its answer was taken
from us and is stopped. Cancel requests arrive by NOTIFY and are also polled every second
(notifications are hints).
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog

from skiplock.db.pool import DB_UNAVAILABLE
from skiplock.queue._running import RunningJobs, StopReason
from skiplock.queue._statements import JOBS
from skiplock.service import StopSignal

log = structlog.get_logger("skiplock.lease")


class LeaseKeeper:
    name = "lease_keeper"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        owner: str,
        running: RunningJobs,
        lease_s: float,
        cancel_poll_s: float = 1.0,
        tick_s: float = 0.25,
    ) -> None:
        self.pool = pool
        self.owner = owner
        self.running = running
        self.lease_s = lease_s
        self.heartbeat_s = lease_s / 3
        self.cancel_poll_s = cancel_poll_s
        self.tick_s = tick_s
        self._stop = StopSignal()

    def cancel(self, payload: str) -> None:
        """Listener hook for ``cancel:<id>``."""
        if payload.isdigit() and self.running.stop(int(payload), StopReason.CANCELLED):
            log.info("job_cancel_requested", job_id=int(payload))

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        now = time.monotonic()
        next_heartbeat, next_cancel_poll = now + self.heartbeat_s, now + self.cancel_poll_s
        while not await self._stop.sleep(self.tick_s):
            try:
                now = time.monotonic()
                if now >= next_cancel_poll:
                    next_cancel_poll = now + self.cancel_poll_s
                    await self._poll_cancels()
                if now >= next_heartbeat:
                    next_heartbeat = now + self.heartbeat_s
                    await self._heartbeat()
            except DB_UNAVAILABLE as exc:
                log.warning("lease_keeper_failed", error=str(exc))

    async def _poll_cancels(self) -> None:
        ids = self.running.ids()
        if ids:
            for record in await self.pool.fetch(JOBS.job_cancel_requested, ids):
                self.running.stop(record["id"], StopReason.CANCELLED)

    async def _heartbeat(self) -> None:
        attempts = self.running.attempts()
        if not attempts:
            return
        ids = list(attempts)
        kept = {r["id"] for r in await self.pool.fetch(JOBS.job_heartbeat, ids, self.owner, self.lease_s)}
        # A job that finished since we listed it is not running any more, so not in `kept` either;
        # one finished and claimed again meanwhile is a new attempt: only the listed attempt is stopped.
        current = self.running.attempts()
        for job_id in set(ids) - kept:
            if current.get(job_id) == attempts[job_id] and self.running.stop(job_id, StopReason.LEASE_LOST):
                log.warning("job_lease_lost", job_id=job_id)

    async def stop(self) -> None:
        self._stop.set()
