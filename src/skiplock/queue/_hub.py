"""Fans job events out to this process's subscribers (websocket and SSE clients).

The listener hands over references ('ev:<job>.<seq>,…'); the hub reads the rows themselves, so
an event of any size arrives whole.

A subscriber of one job is fed from the table, which is the truth: each read takes at most a page
of its events after the last one it has, and never more than its buffer has room for, so a long
history arrives page by page as the subscriber drains it, in order, with no gaps and no
duplicates. Subscribers at the same place share one read; every read of a round goes out in one
statement, the shortest first, so a long catch-up never holds back another subscriber's live
events. A job's subscriber is never cut off: if it stops reading, the hub stops reading for it.

A subscriber of every job gets the events the notifications name. Notifications can be lost (the
listener reconnected), a read can fail, and such a subscriber can fall behind: then it is told
(``EventsMissed``) instead of silently missing events.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from skiplock import metrics
from skiplock.errors import EventsMissed as EventsMissed
from skiplock.errors import SubscriptionClosed as SubscriptionClosed
from skiplock.queue._statements import EVENTS
from skiplock.queue.models import FINAL_STATES
from skiplock.service import Recovery, StopSignal

log = structlog.get_logger("skiplock.events")

#: Events of one job read at most at once for one subscriber (or a group at the same place).
PAGE = 500
#: Events read at most in one round for all subscribers together (the rest wait a round).
ROUND = 20 * PAGE


def decode_data(text: str) -> dict[str, Any]:
    """An event's data from its JSON text; never fails on what PostgreSQL stored."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # numbers beyond a double: the standard library copes
        value = json.loads(text)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: int
    seq: int
    at: datetime
    kind: str
    data_json: str  # as PostgreSQL wrote it: passed on, never decoded on the way
    json: str  # the whole event, encoded once, sent to every subscriber as is

    @property
    def data(self) -> dict[str, Any]:
        return decode_data(self.data_json)

    @property
    def is_final(self) -> bool:
        return self.kind == "state" and self.data.get("state") in FINAL_STATES

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> JobEvent:
        job_id, seq, at, kind, data = (record[k] for k in ("job_id", "seq", "at", "kind", "data"))
        body = {"job_id": job_id, "seq": seq, "at": at, "kind": kind, "data": orjson.Fragment(data)}
        return cls(job_id, seq, at, kind, data, orjson.dumps(body).decode())


def _nothing() -> None:
    pass


@dataclass(eq=False)
class Subscription:
    """One subscriber's view: a bounded buffer of events, in order."""

    job_id: int | None  # None: every job (optionally filtered by queue, task and job ids)
    last_seq: int = 0  # a job's subscriber: the seq of the last event it was given
    queue: str | None = None
    task: str | None = None
    #: An all-jobs subscriber of these jobs only (a workflow's steps), or None.
    job_ids: frozenset[int] | None = None
    capacity: int = 1000
    #: Called when a subscriber that is behind has room for another read (the hub's wake-up).
    on_room: Callable[[], None] = _nothing
    #: A job's subscriber: events after last_seq may be in the table, not yet read for it.
    behind: bool = False
    #: Why events may have been missed (then ``get`` raises EventsMissed), or None.
    missed: str | None = None
    #: The subscriber went away: ``get`` raises SubscriptionClosed.
    closed: bool = False
    _buffer: deque[JobEvent] = field(default_factory=deque)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def room(self) -> int:
        return self.capacity - len(self._buffer)

    @property
    def has_room_for_a_read(self) -> bool:
        """Room for half a buffer (or a whole small one): reads stay few, and run ahead of need."""
        return self.room >= max(1, self.capacity // 2)

    def offer(self, event: JobEvent) -> None:
        """Buffer a job's next event, or an event of every job (filtered by the hub)."""
        if self.missed is not None:
            return
        if self.job_id is not None:
            if event.seq <= self.last_seq:
                return  # already given
            if not self.room:  # not expected (reads fit the room): read it again later
                self.behind = True
                return
            self.last_seq = event.seq
        elif not self.room:
            self.miss("fell behind")
            return
        self._buffer.append(event)
        self._arrived.set()

    def miss(self, reason: str) -> None:
        """Tell the subscriber it may have missed events: its next ``get`` raises EventsMissed."""
        if self.missed is None:
            self.missed = reason
            self._buffer.clear()
        self._arrived.set()

    def close(self) -> None:
        """The subscriber went away: a waiting (or the next) ``get`` raises SubscriptionClosed, so
        its sender stops without watching the client itself around every event."""
        self.closed = True
        self._arrived.set()

    async def get(self) -> JobEvent:
        """The next event; raises EventsMissed once events may have been missed, and
        SubscriptionClosed once the subscriber is closed."""
        while not self._buffer and self.missed is None and not self.closed:
            self._arrived.clear()
            await self._arrived.wait()
        if self.closed:
            raise SubscriptionClosed
        if self.missed is not None:
            raise EventsMissed(self.missed)
        event = self._buffer.popleft()
        if self.behind and self.has_room_for_a_read:
            self.on_room()
        return event


@dataclass(slots=True)
class _Read:
    """One page read for the subscribers of a job that are at the same place."""

    job_id: int
    after: int
    max_rows: int
    subs: list[Subscription]


class EventHub:
    name = "event_hub"

    def __init__(self, pool: asyncpg.Pool, *, buffer: int = 1000, page: int = PAGE) -> None:
        self.pool = pool
        self.buffer = buffer
        self.page = page
        self._by_job: dict[int, set[Subscription]] = defaultdict(set)
        self._latest: dict[int, int] = {}  # highest seq notified per followed job
        self._everything: set[Subscription] = set()
        self._refs: list[tuple[int, int]] = []  # exact events, for the all-jobs subscribers
        self._wake = asyncio.Event()
        self._stop = StopSignal()

    def subscribe_job(self, job_id: int, after: int = 0) -> Subscription:
        """Events of one job with seq > after: history first, then live."""
        sub = Subscription(job_id, last_seq=after, capacity=self.buffer, on_room=self._wake.set, behind=True)
        self._by_job[job_id].add(sub)
        self._wake.set()
        self._count_subscribers()
        return sub

    def subscribe_all(
        self, *, queue: str | None = None, task: str | None = None, job_ids: frozenset[int] | None = None
    ) -> Subscription:
        """Every new event of every job (of one queue/task, of the jobs in ``job_ids``, if given)."""
        sub = Subscription(None, queue=queue, task=task, job_ids=job_ids, capacity=self.buffer)
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
                self._latest.pop(sub.job_id, None)

    def hint(self, payload: str) -> None:
        """Listener hook for 'ev:<job>.<seq>,…'."""
        for ref in payload.split(","):
            job, _, seq_text = ref.partition(".")
            if not (job.isdigit() and seq_text.isdigit()):
                continue
            job_id, seq = int(job), int(seq_text)
            subs = self._by_job.get(job_id)
            if subs:
                self._latest[job_id] = max(seq, self._latest.get(job_id, 0))
                for sub in subs:
                    if sub.last_seq < seq:
                        sub.behind = True
            if self._everything:
                self._refs.append((job_id, seq))
        if len(self._refs) > ROUND:  # the hub cannot keep up: say so rather than hold ever more
            self._tell_everything("fell behind")
        self._wake.set()

    def catch_up(self) -> None:
        """After a reconnect notifications may have been lost: a job's subscribers read again
        from where they are; subscribers of every job are told."""
        for subs in self._by_job.values():
            for sub in subs:
                sub.behind = True
        self._tell_everything("listener reconnected")
        self._wake.set()

    def _tell_everything(self, reason: str) -> None:
        self._refs.clear()
        for sub in self._everything:
            sub.miss(reason)
        self._everything.clear()  # each resubscribes when it resumes
        self._count_subscribers()

    async def run(self, ready: asyncio.Event) -> None:
        recovery = Recovery(self.name, self._stop)
        ready.set()
        while not self._stop.is_set:
            await self._wake.wait()
            self._wake.clear()
            if self._stop.is_set:
                break
            try:
                await self._deliver_to_everything()
                await self._deliver_to_jobs()
            except Exception as exc:  # whatever it is, the hub goes on: log, count, back off, retry
                if await recovery.failed(exc):
                    break
                self._wake.set()
            else:
                recovery.succeeded()

    async def _deliver_to_everything(self) -> None:
        refs, self._refs = self._refs, []
        if not refs or not self._everything:
            return
        job_ids, seqs = zip(*refs, strict=True)
        try:
            records = await self.pool.fetch(EVENTS.event_get_many, list(job_ids), list(seqs))
        except Exception:
            self._tell_everything("read failed")
            raise
        for record in records:
            event = JobEvent.from_record(record)
            for sub in list(self._everything):
                if (
                    sub.queue in (None, record["queue"])
                    and sub.task in (None, record["task"])
                    and (sub.job_ids is None or event.job_id in sub.job_ids)
                ):
                    sub.offer(event)
                if sub.missed is not None:
                    self.unsubscribe(sub)  # its lag must not hold back the next read

    async def _deliver_to_jobs(self) -> None:
        reads = self._plan_reads()
        if not reads:
            return
        for read in reads:
            for sub in read.subs:
                sub.behind = False  # a hint that arrives while the read is out sets it again
        try:
            records = await self.pool.fetch(
                EVENTS.event_since_many,
                [r.job_id for r in reads],
                [r.after for r in reads],
                [r.max_rows for r in reads],
            )
        except Exception:
            for read in reads:
                for sub in read.subs:
                    sub.behind = True  # read again after the back-off: the table still has it all
            raise
        counts = [0] * len(reads)
        for record in records:
            index = record["read"] - 1
            counts[index] += 1
            event = JobEvent.from_record(record)
            for sub in reads[index].subs:
                sub.offer(event)
        for read, count in zip(reads, counts, strict=True):
            if count == read.max_rows:  # a full page: there may be more
                for sub in read.subs:
                    sub.behind = True
        if any(sub.behind and sub.has_room_for_a_read for subs in self._by_job.values() for sub in subs):
            self._wake.set()  # next page, or a read that did not fit in this round

    def _plan_reads(self) -> list[_Read]:
        """This round's reads: one per job and place among subscribers that are behind and have
        room, shortest first (live events before catch-ups), within the round's budget."""
        by_place: dict[tuple[int, int], list[Subscription]] = defaultdict(list)
        for job_id, subs in self._by_job.items():
            for sub in subs:
                if sub.behind and sub.has_room_for_a_read:
                    by_place[(job_id, sub.last_seq)].append(sub)
        reads: list[_Read] = []
        for (job_id, after), group in by_place.items():
            # As many as notified when that is known (a live subscriber wants one or two), else a page.
            wanted = self._latest.get(job_id, 0) - after
            max_rows = min(self.page, min(sub.room for sub in group), wanted if wanted > 0 else self.page)
            reads.append(_Read(job_id, after, max_rows, group))
        reads.sort(key=lambda r: r.max_rows)
        planned: list[_Read] = []
        total = 0
        for read in reads:
            if planned and total + read.max_rows > ROUND:
                break
            planned.append(read)
            total += read.max_rows
        return planned

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
