"""Writes running jobs' progress and log events: at once, but at most once per interval per job.

A job that reports progress ten times a second gets each report written as it comes; one that
reports in a tight loop gets its latest value written every ``interval_s`` (the reports in
between are coalesced), so a chatty task cannot flood the database. The last value before a
state change is written by the completer, in the same transaction as the outcome.

An event the server refuses is dropped alone (logged and counted); the rest are written. While
the database is unavailable nothing is dropped: events go back to their job, in order, and are
retried with backoff (or written with its outcome if it finishes first), bounded per job by
``MAX_PENDING_EVENTS`` (log lines beyond it are counted, as for a chatty task).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import asyncpg
import structlog

from skiplock.queue._isolation import write_events_isolating
from skiplock.queue._running import MAX_PENDING_EVENTS, JobEvent, PendingEvent, RunningJob, RunningJobs
from skiplock.queue._write_order import EventsBeforeOutcomes
from skiplock.service import Recovery, StopSignal, str_of

log = structlog.get_logger("skiplock.events")

STOP_WRITE_S = 1.0  # bound on the last write when stopping (the completer's flush comes after)


class EventWriter:
    name = "event_writer"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        owner: str,
        running: RunningJobs,
        interval_s: float,
        order: EventsBeforeOutcomes,
    ) -> None:
        self.pool = pool
        self.owner = owner
        #: Its turn is taken around every write, shared with the completer (see _write_order).
        self.order = order
        self.running = running
        self.interval_s = interval_s
        self._stop = StopSignal()
        self._recovery = Recovery(self.name, self._stop)
        self._deadline: float | None = None
        self._writing: asyncio.Timeout | None = None

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
            try:
                await self._write_due(time.monotonic())
            except Exception as exc:
                if await self._recovery.failed(exc):
                    break
            else:
                self._recovery.succeeded()
        try:
            await self._write_due(None)  # stopping: whatever is left
        except Exception as exc:
            log.warning("job_events_not_written", error=str_of(exc), reason="stopping")

    async def stop(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + STOP_WRITE_S
            if self._writing is not None:
                self._writing.reschedule(self._deadline)
        self._stop.set()
        self.running.events_pending.set()

    async def _write_due(self, now: float | None) -> None:
        try:
            # The turn is waited for under the stop deadline too: the completer may hold it in a
            # write that waits on the database.
            async with asyncio.timeout_at(self._deadline) as self._writing:
                async with self.order.turn:  # before taking the events: see _write_order
                    events = self.running.take_due_events(now, self.interval_s)
                    try:
                        if events:
                            async with self.pool.acquire() as conn:
                                async with conn.transaction():
                                    await write_events_isolating(conn, events, self.owner)
                                events = []  # committed
                    except BaseException:
                        self._hand_back(events)  # none of these was written: rolled back
                        raise
        finally:
            self._writing = None

    def _hand_back(self, events: list[JobEvent]) -> None:
        """Events that could not be written go back to their job, ahead of its newer ones (or to
        its outcome if it finished meanwhile: the completer writes them first). Called in the
        turn, so no outcome is written before they are where they belong."""
        jobs = {r.job.id: r for r in self.running}
        for (job_id, attempt), group in itertools.groupby(events, key=lambda e: (e[0], e[1])):
            taken = [(kind, data) for _, _, kind, data in group]
            running = jobs.get(job_id)
            if running is not None and running.job.attempt == attempt:
                if not running.fenced:  # a run that lost its lease writes nothing more
                    _put_back(running, taken)
            elif not self.order.to_outcome(job_id, attempt, taken):
                log.warning("job_events_not_written", job_id=job_id, count=len(taken), reason="job gone")


def _put_back(running: RunningJob, events: list[PendingEvent]) -> None:
    if any(kind == "progress" for kind, _ in running.pending):
        events = [e for e in events if e[0] != "progress"]  # a newer report supersedes it
    room = max(0, MAX_PENDING_EVENTS - len(running.pending))
    if len(events) > room:  # the oldest go; they are counted in the 'log lines dropped' line
        running.dropped_logs += len(events) - room
        events = events[len(events) - room :]
    running.pending[:0] = events
