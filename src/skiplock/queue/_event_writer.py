"""Writes running jobs' progress and log events: at once, but at most once per interval per job.

A job that reports progress ten times a second gets each report written as it comes; one that
reports in a tight loop gets its latest value written every ``interval_s`` (the reports in
between are coalesced), so a chatty task cannot flood the database. The last value before a
state change is written by the completer, in the same transaction as the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import structlog

from skiplock.db.pool import DB_UNAVAILABLE
from skiplock.queue._completer import write_events
from skiplock.queue._running import RunningJobs
from skiplock.service import StopSignal

log = structlog.get_logger("skiplock.events")


class EventWriter:
    name = "event_writer"

    def __init__(
        self, pool: asyncpg.Pool, *, running: RunningJobs, interval_s: float, write_lock: asyncio.Lock
    ) -> None:
        self.pool = pool
        self.write_lock = write_lock
        self.running = running
        self.interval_s = interval_s
        self._stop = StopSignal()

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        pending = self.running.events_pending
        while not self._stop.is_set:
            pending.clear()  # before looking: an event added from now on wakes the wait below
            wait_s = self.running.next_event_due(self.interval_s)
            if wait_s is None or wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pending.wait(), timeout=wait_s)
                continue
            await self._write_due(time.monotonic())
        await self._write_due(None)  # stopping: whatever is left

    async def _write_due(self, now: float | None) -> None:
        async with self.write_lock:  # taken before the events: see Completer.write_lock
            events = self.running.take_due_events(now, self.interval_s)
            if not events:
                return
            try:
                await write_events(self.pool, events)
            except DB_UNAVAILABLE as exc:
                log.warning("event_write_failed", error=str(exc), dropped=len(events))

    async def stop(self) -> None:
        self._stop.set()
        self.running.events_pending.set()
