"""The jobs this process runs right now: shared by the producer, the lease keeper and the listener."""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from skiplock.queue.models import ClaimedJob


class StopReason(enum.Enum):
    CANCELLED = "cancelled"  # a user asked; the job ends cancelled
    SHUTDOWN = "shutdown"  # this process stops; the job goes back to its queue
    LEASE_LOST = "lease_lost"  # another process owns the job now; our outcome is void


MAX_PENDING_EVENTS = 1000  # per job between two writes; beyond it log lines are counted, not kept

PendingEvent = tuple[str, dict[str, Any]]  # (kind, data)


@dataclass(slots=True)
class RunningJob:
    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    progress: dict[str, Any] | None = None
    stop_reason: StopReason | None = None
    #: Progress and log events not yet written, in order. Progress is coalesced: only the latest
    #: report between two writes is kept, which is what throttles a chatty task.
    pending: list[PendingEvent] = field(default_factory=list)
    dropped_logs: int = 0
    last_write: float = float("-inf")  # monotonic time of the last event write

    def add_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress":
            self.progress = data
            self.pending = [e for e in self.pending if e[0] != "progress"]
        elif len(self.pending) >= MAX_PENDING_EVENTS:
            self.dropped_logs += 1
            return
        self.pending.append((kind, data))

    def take_events(self) -> list[PendingEvent]:
        taken, self.pending = self.pending, []
        if self.dropped_logs:
            taken.append(
                (
                    "log",
                    {
                        "message": "log lines dropped",
                        "level": "warning",
                        "fields": {"count": self.dropped_logs},
                    },
                )
            )
            self.dropped_logs = 0
        return taken


@dataclass
class RunningJobs:
    """Running jobs by id, with counts per queue."""

    _jobs: dict[int, RunningJob] = field(default_factory=dict)
    _per_queue: Counter[str] = field(default_factory=Counter)
    #: Set whenever a job leaves, so the producer can claim again.
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set whenever a job reports progress or logs, to wake the event writer.
    events_pending: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, job: ClaimedJob) -> RunningJob | None:
        """Track a claimed job; None if this process already runs that job (it must not run twice
        at once: the second claim is left to expire and be rescued)."""
        if job.id in self._jobs:
            return None
        running = RunningJob(job)
        self._jobs[job.id] = running
        self._per_queue[job.queue] += 1
        return running

    def remove(self, job_id: int) -> None:
        running = self._jobs.pop(job_id, None)
        if running is not None:
            self._per_queue[running.job.queue] -= 1
            self.freed.set()

    def count(self, queue: str | None = None) -> int:
        return len(self._jobs) if queue is None else self._per_queue[queue]

    def ids(self) -> list[int]:
        return list(self._jobs)

    def attempts(self) -> dict[int, int]:
        return {job_id: running.job.attempt for job_id, running in self._jobs.items()}

    def __iter__(self) -> Iterator[RunningJob]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def add_event(self, job_id: int, kind: str, data: dict[str, Any]) -> None:
        running = self._jobs.get(job_id)
        if running is not None:
            running.add_event(kind, data)
            self.events_pending.set()

    def next_event_due(self, interval_s: float) -> float | None:
        """Seconds until some job's pending events may be written (0: now; None: none pending)."""
        now = time.monotonic()
        waits = [max(0.0, r.last_write + interval_s - now) for r in self._jobs.values() if r.pending]
        return min(waits) if waits else None

    def take_due_events(self, now: float | None, interval_s: float) -> list[tuple[int, str, dict[str, Any]]]:
        """Pending events of every job last written at least ``interval_s`` ago (all if ``now`` is None)."""
        taken = []
        for running in self._jobs.values():
            if running.pending and (now is None or now - running.last_write >= interval_s):
                taken += [(running.job.id, kind, data) for kind, data in running.take_events()]
                running.last_write = now if now is not None else time.monotonic()
        return taken

    def stop(self, job_id: int, reason: StopReason) -> bool:
        """Cancel a running job's coroutine, once: the first reason given wins, and a job already
        stopping is not cancelled again (the cancel poll asks every second; a second cancel would
        cut short a thread task's wait for its thread)."""
        running = self._jobs.get(job_id)
        if running is None or running.task is None:
            return False
        if running.stop_reason is None:
            running.stop_reason = reason
            running.task.cancel()
        return True
