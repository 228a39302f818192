"""The jobs this process runs right now: shared by the producer, the lease keeper and the listener."""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from skiplock.queue.models import ClaimedJob


class StopReason(enum.Enum):
    CANCELLED = "cancelled"  # a user asked; the job ends cancelled
    SHUTDOWN = "shutdown"  # this process stops; the job goes back to its queue
    LEASE_LOST = "lease_lost"  # another process owns the job now; our outcome is void


MAX_PENDING_EVENTS = 1000  # per job between two writes; beyond it log lines are counted, not kept

PendingEvent = tuple[str, dict[str, Any]]  # (kind, data)
#: (job id, attempt, kind, data): what the event writer writes, guarded by the attempt.
JobEvent = tuple[int, int, str, dict[str, Any]]


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
    #: The last moment (monotonic) this process surely holds the job's lease; past it the run is
    #: fenced: stopped, its outcome void, nothing more of it written (see _lease.py).
    valid_until: float = math.inf
    #: The deadline the last lease written for it gives (claim or heartbeat that answered): a run
    #: is held past it by a failing heartbeat for at most the hold (see _lease.py), never more.
    renewed_until: float = math.inf
    fenced: bool = False
    fenced_at: float = math.inf  # monotonic
    #: After its first CancelledError, a fenced run has this long for its cleanup (well within the
    #: lease's margin), then every await it makes is cancelled (see _lease.fenced).
    cleanup_s: float = 0.1
    #: The executor waits for the job's thread: a fenced run is not cut short there (see fenced).
    waiting_for_thread: bool = False
    #: Its thread still ran when the process stopped waiting for it (leaving past its grace).
    thread_left_running: bool = False
    owner: str = ""  # the lease owner this process claims as

    def holds_lease(self, now: float | None = None) -> bool:
        return not self.fenced and (time.monotonic() if now is None else now) < self.valid_until

    def fence(self, now: float | None = None) -> None:
        """The lease may be gone: the run's outcome is void, and nothing more of it is written."""
        if not self.fenced:
            self.fenced_at = time.monotonic() if now is None else now
        self.fenced = True
        self.stop_reason = StopReason.LEASE_LOST
        self.pending.clear()

    def stop(self, reason: StopReason) -> bool:
        """Cancel the job's coroutine, once: the first reason given wins, and a job already
        stopping is not cancelled again (the cancel poll asks every second; a second cancel would
        cut short a thread task's wait for its thread). A lost lease wins over any reason given
        before: it voids the outcome, nothing more of the run is written, and it cancels the task
        again (the run keeps being stopped, see _lease.fenced)."""
        if self.task is None:
            return False
        stopping = self.stop_reason is not None
        if reason is StopReason.LEASE_LOST:
            if not self.fenced:  # also when stopping already: the task may have swallowed that cancel
                self.fence()
                self.task.cancel()
            return True
        if not stopping:
            self.stop_reason = reason
            self.task.cancel()
        return True

    def add_event(self, kind: str, data: dict[str, Any]) -> None:
        if self.fenced:
            return
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

    owner: str = ""  # this process's name as a lease owner
    _jobs: dict[int, RunningJob] = field(default_factory=dict)
    _per_queue: Counter[str] = field(default_factory=Counter)
    #: Set whenever a job leaves, so the producer can claim again.
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set whenever a job reports progress or logs, to wake the event writer.
    events_pending: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, job: ClaimedJob, valid_until: float = math.inf) -> RunningJob | None:
        """Track a claimed job whose lease surely holds until ``valid_until`` (monotonic); None if
        this process already runs that job (claims exclude those, so it should never happen)."""
        if job.id in self._jobs:
            return None
        running = RunningJob(job, valid_until=valid_until, renewed_until=valid_until, owner=self.owner)
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

    def shards(self) -> dict[int, int]:
        """Job id → shard of every run: its heartbeat names it."""
        return {job_id: running.job.shard for job_id, running in self._jobs.items()}

    def leases(self, now: float) -> dict[int, int]:
        """Job id → attempt of every run whose lease still holds at ``now``: what a heartbeat renews."""
        return {i: r.job.attempt for i, r in self._jobs.items() if r.holds_lease(now)}

    def _unfenced(self, attempts: dict[int, int]) -> Iterator[RunningJob]:
        """The runs of these (id → attempt) still tracked at that attempt and not fenced."""
        for job_id, attempt in attempts.items():
            running = self._jobs.get(job_id)
            if running is not None and running.job.attempt == attempt and not running.fenced:
                yield running

    def renew(self, attempts: dict[int, int], valid_until: float) -> None:
        """The leases of these runs (id → attempt) surely hold until ``valid_until`` now."""
        for running in self._unfenced(attempts):
            running.renewed_until = max(running.renewed_until, valid_until)
            running.valid_until = max(running.valid_until, valid_until)

    def hold(self, attempts: dict[int, int], valid_until: float, hold_s: float) -> None:
        """A heartbeat for these runs failed: hold them until ``valid_until``, but never more than
        ``hold_s`` past the deadline of their last renewal (rescuers wait that long past a lease)."""
        for running in self._unfenced(attempts):
            bounded = min(valid_until, running.renewed_until + hold_s)
            running.valid_until = max(running.valid_until, bounded)

    def fence_expired(self, now: float) -> list[int]:
        """Stop every run whose lease may be gone by ``now``; returns their ids."""
        expired = [r for r in self._jobs.values() if not r.fenced and now >= r.valid_until]
        for running in expired:
            running.stop(StopReason.LEASE_LOST)
        return [r.job.id for r in expired]

    def __iter__(self) -> Iterator[RunningJob]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def event_sink(self, running: RunningJob) -> Callable[[int, str, dict[str, Any]], None]:
        """Where one run's context sends its events: to that run alone, while it is tracked. A late
        event of an earlier attempt (a thread's, a fenced run's) never lands in a newer attempt."""

        def add(_job_id: int, kind: str, data: dict[str, Any]) -> None:
            if self._jobs.get(running.job.id) is running:
                running.add_event(kind, data)
                self.events_pending.set()

        return add

    def next_event_due(self, interval_s: float) -> float | None:
        """Seconds until some job's pending events may be written (0: now; None: none pending)."""
        now = time.monotonic()
        waits = [max(0.0, r.last_write + interval_s - now) for r in self._jobs.values() if r.pending]
        return min(waits) if waits else None

    def take_due_events(self, now: float | None, interval_s: float) -> list[JobEvent]:
        """Pending events of every job last written at least ``interval_s`` ago (all if ``now`` is
        None). A run whose lease may be gone writes nothing more: its events are dropped."""
        taken: list[JobEvent] = []
        clock = time.monotonic()
        for running in self._jobs.values():
            if running.pending and not running.holds_lease(clock):
                running.pending.clear()
            elif running.pending and (now is None or now - running.last_write >= interval_s):
                attempt = running.job.attempt
                taken += [(running.job.id, attempt, kind, data) for kind, data in running.take_events()]
                running.last_write = now if now is not None else clock
        return taken

    def stop(self, job_id: int, reason: StopReason) -> bool:
        """Cancel a running job's coroutine (see :meth:`RunningJob.stop`)."""
        running = self._jobs.get(job_id)
        return running is not None and running.stop(reason)
