"""Fans job events out to this process's subscribers (websocket and SSE clients).

The listener hands over references ('ev:<job>.<seq>,…'); the hub reads the rows themselves, so
an event of any size arrives whole, and each subscriber gets exactly the events after the last
one it had, in order: no gaps, no duplicates, even when it joins while the job runs. One read
per burst serves every subscriber. A subscriber whose buffer fills is cut off, never waited on.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from skiplock import metrics
from skiplock.db.pool import DB_UNAVAILABLE
from skiplock.queue._statements import EVENTS
from skiplock.queue.models import FINAL_STATES
from skiplock.service import StopSignal

log = structlog.get_logger("skiplock.events")


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: int
    seq: int
    at: datetime
    kind: str
    data: dict[str, Any]
    json: str  # encoded once, sent to every subscriber as is

    @property
    def is_final(self) -> bool:
        return self.kind == "state" and self.data.get("state") in FINAL_STATES

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> JobEvent:
        body = {k: record[k] for k in ("job_id", "seq", "at", "kind", "data")}
        return cls(**body, json=orjson.dumps(body).decode())


class SubscriberTooSlow(Exception):
    """The subscriber's buffer filled up; it was cut off and can resume with after=last_seq."""


@dataclass(eq=False)
class Subscription:
    """One subscriber's view: a bounded buffer of events, in order."""

    job_id: int | None  # None: every job (optionally filtered by queue and task)
    last_seq: int = 0
    queue: str | None = None
    task: str | None = None
    capacity: int = 1000
    _buffer: asyncio.Queue[JobEvent] = field(init=False)
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._buffer = asyncio.Queue(self.capacity)

    def offer(self, event: JobEvent) -> None:
        if self.overflowed.is_set():
            return
        try:
            self._buffer.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()
            return
        if self.job_id is not None:
            self.last_seq = event.seq

    async def get(self) -> JobEvent:
        """The next event; raises SubscriberTooSlow once the buffer has overflowed."""
        if self.overflowed.is_set():
            raise SubscriberTooSlow
        getter = asyncio.ensure_future(self._buffer.get())
        overflow = asyncio.ensure_future(self.overflowed.wait())
        try:
            await asyncio.wait({getter, overflow}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            overflow.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        raise SubscriberTooSlow


class EventHub:
    name = "event_hub"

    def __init__(self, pool: asyncpg.Pool, *, buffer: int = 1000) -> None:
        self.pool = pool
        self.buffer = buffer
        self._by_job: dict[int, set[Subscription]] = defaultdict(set)
        self._everything: set[Subscription] = set()
        self._stale_jobs: set[int] = set()  # jobs whose subscribers may have events to read
        self._refs: list[tuple[int, int]] = []  # exact events, for the all-jobs subscribers
        self._wake = asyncio.Event()
        self._stop = StopSignal()

    def subscribe_job(self, job_id: int, after: int = 0) -> Subscription:
        """Events of one job with seq > after: history first, then live."""
        sub = Subscription(job_id, last_seq=after, capacity=self.buffer)
        self._by_job[job_id].add(sub)
        self._stale_jobs.add(job_id)  # read the history; later events arrive as hints
        self._wake.set()
        self._count_subscribers()
        return sub

    def subscribe_all(self, *, queue: str | None = None, task: str | None = None) -> Subscription:
        """Every new event of every job (of one queue/task if given)."""
        sub = Subscription(None, queue=queue, task=task, capacity=self.buffer)
        self._everything.add(sub)
        self._count_subscribers()
        return sub

    def _count_subscribers(self) -> None:
        metrics.subscribers.set(len(self._everything) + sum(len(subs) for subs in self._by_job.values()))

    def unsubscribe(self, sub: Subscription) -> None:
        try:
            self._unsubscribe(sub)
        finally:
            self._count_subscribers()

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub.job_id is None:
            self._everything.discard(sub)
            return
        subs = self._by_job.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_job[sub.job_id]

    def hint(self, payload: str) -> None:
        """Listener hook for 'ev:<job>.<seq>,…'."""
        for ref in payload.split(","):
            job, _, seq = ref.partition(".")
            if not (job.isdigit() and seq.isdigit()):
                continue
            job_id = int(job)
            if job_id in self._by_job:
                self._stale_jobs.add(job_id)
            if self._everything:
                self._refs.append((job_id, int(seq)))
        self._wake.set()

    def catch_up(self) -> None:
        """After a reconnect: notifications may have been lost, so read for every job followed."""
        self._stale_jobs.update(self._by_job)
        self._wake.set()

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        while not self._stop.is_set:
            await self._wake.wait()
            self._wake.clear()
            if self._stop.is_set:
                break
            jobs, self._stale_jobs = self._stale_jobs, set()
            refs, self._refs = self._refs, []
            try:
                await self._deliver_to_jobs(jobs)
                await self._deliver_to_everything(refs)
            except DB_UNAVAILABLE as exc:
                log.warning("event_read_failed", error=str(exc))
                self._stale_jobs |= jobs
                if await self._stop.sleep(0.5):
                    break
                self._wake.set()

    async def _deliver_to_jobs(self, jobs: set[int]) -> None:
        followed = [j for j in jobs if self._by_job.get(j)]
        if not followed:
            return
        afters = [min(s.last_seq for s in self._by_job[j]) for j in followed]
        for record in await self.pool.fetch(EVENTS.event_since_many, followed, afters):
            event = JobEvent.from_record(record)
            for sub in list(self._by_job.get(event.job_id, ())):
                # Only the very next event: a subscriber that joined while this read was under way
                # may be behind where it started, and must not skip ahead (its own read follows).
                if event.seq == sub.last_seq + 1:
                    sub.offer(event)
                if sub.overflowed.is_set():
                    self.unsubscribe(sub)  # its lag must not hold back the next read

    async def _deliver_to_everything(self, refs: list[tuple[int, int]]) -> None:
        if not refs or not self._everything:
            return
        job_ids, seqs = zip(*refs, strict=True)
        for record in await self.pool.fetch(EVENTS.event_get_many, list(job_ids), list(seqs)):
            event = JobEvent.from_record(record)
            for sub in list(self._everything):
                if sub.queue in (None, record["queue"]) and sub.task in (None, record["task"]):
                    sub.offer(event)
                if sub.overflowed.is_set():
                    self.unsubscribe(sub)

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
