"""Batched completion: outcomes gathered for a moment and written in one statement.

Each write is guarded by state = 'running', the attempt and the lease owner, so an outcome for
a job this process no longer owns changes nothing. While the database is unavailable, outcomes
stay pending and the whole batch is retried with backoff. A batch the server refuses for its
values is split until the refused outcome is alone (see ``_isolation``): every other outcome is
written, and that job fails with an ``OutcomeNotStored`` error saying why. Stopping flushes for
at most ``stop_flush_s``; what is still unwritten then is logged and left to its leases (those
jobs are rescued and run again: at-least-once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncpg
import structlog

from skiplock import metrics
from skiplock.db.moved import retry_moved
from skiplock.db.pool import AnyConnection, encode_json
from skiplock.db.sqlfile import Statement
from skiplock.queue._isolation import (
    refused_for_values,
    write_events,
    write_events_isolating,
    write_isolating,
)
from skiplock.queue._running import JobEvent
from skiplock.queue._statements import JOBS, WORKFLOWS, JobFinish, finish_jobs, notify_requeued
from skiplock.queue._write_order import EventsBeforeOutcomes
from skiplock.queue.models import ClaimedJob
from skiplock.service import Recovery, StopSignal, str_of

log = structlog.get_logger("skiplock.completer")


class OutcomeKind(StrEnum):
    """How a run ended, as the completer writes it. The first four are the job states they set;
    the last three are not job states: the run is handed back to its queue."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY = "queued"  # another attempt after its backoff
    SNOOZED = "snoozed"  # queued again after retry_in_s, its attempt not held against max_attempts
    RELEASED = "released"  # stopped at shutdown; its attempt stays counted
    UNSTARTED = "unstarted"  # never started here; its attempt is given back


_HANDED_BACK: dict[OutcomeKind, Statement] = {
    OutcomeKind.RELEASED: JOBS.job_release_many,
    OutcomeKind.UNSTARTED: JOBS.job_release_unstarted,
}
_REASON_CHARS = 1000  # of the server's message, in the OutcomeNotStored error


@dataclass(slots=True)
class Outcome:
    job: ClaimedJob
    kind: OutcomeKind
    result: Any = None
    error: dict[str, Any] | None = None
    retry_in_s: float = 0.0  # a retry's backoff, a snooze's seconds; for a release, until due again
    progress: dict[str, Any] | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (kind, data) not yet written

    def event_rows(self) -> list[JobEvent]:
        return [(self.job.id, self.job.attempt, kind, data) for kind, data in self.events]


class Completer:
    name = "completer"
    #: Default bound on the flush when stopping, against a database that does not answer.
    STOP_FLUSH_S = 3.0

    def __init__(
        self,
        pool: asyncpg.Pool,
        owner: str,
        *,
        max_batch: int = 1000,
        linger_s: float = 0.002,
        stop_flush_s: float = STOP_FLUSH_S,
        order: EventsBeforeOutcomes | None = None,
    ) -> None:
        self.pool = pool
        self.owner = owner
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._step_waiting = False  # a workflow step's outcome is pending: no linger
        self.stop_flush_s = stop_flush_s
        self._pending: list[Outcome] = []
        #: Every write is made in its turn, shared with the event writer: a run's earlier events
        #: commit before its outcome (whose state change would make them be refused).
        self.order = order or EventsBeforeOutcomes()
        self.order.to_outcome = self.add_earlier_events
        self._arrived = asyncio.Event()
        self._stop = StopSignal()
        # Outcomes wait while the database is away and their leases run out meanwhile: retry soon.
        self._recovery = Recovery(self.name, self._stop, max_s=1.0)
        self._deadline: float | None = None  # loop time at which stopping gives up on the database
        self._flushing: asyncio.Timeout | None = None
        #: Called after each batch of outcomes commits (only sets flags: the producer's wake-up of
        #: queues whose global concurrency held a claim back until these jobs stopped counting).
        self.on_written: list[Callable[[], None]] = []

    @property
    def pending(self) -> int:
        """Outcomes not written yet."""
        return len(self._pending)

    def pending_leases(self) -> dict[int, int]:
        """Job id → attempt of every outcome not written yet (the latest attempt of a job): the
        heartbeat renews their leases, so no rescuer re-runs a job whose outcome waits here."""
        leases: dict[int, int] = {}
        for outcome in self._pending:
            job = outcome.job
            leases[job.id] = max(job.attempt, leases.get(job.id, 0))
        return leases

    def pending_shards(self) -> dict[int, int]:
        """Job id → shard of every outcome not written yet (its lease's heartbeat names it)."""
        return {outcome.job.id: outcome.job.shard for outcome in self._pending}

    def put(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        if outcome.job.workflow_id is not None:
            self._step_waiting = True
        self._arrived.set()

    def add_earlier_events(self, job_id: int, attempt: int, events: list[tuple[str, dict[str, Any]]]) -> bool:
        """Events of a run that finished while they were being written (and could not be): they
        go first with its pending outcome. False when there is no such outcome."""
        for outcome in self._pending:
            if outcome.job.id == job_id and outcome.job.attempt == attempt:
                outcome.events[:0] = events
                return True
        return False

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        while not self._stop.is_set:
            self._arrived.clear()
            if not self._pending:
                await self._arrived.wait()
                continue
            # Let a burst of completions share one write; not when a workflow step's outcome waits,
            # as the steps after it start only once it is written (a chain's pace is set here).
            if len(self._pending) < self.max_batch and not self._step_waiting:
                await asyncio.sleep(self.linger_s)
            self._step_waiting = False
            try:
                await self._flush_bounded()
            except Exception as exc:  # unavailable (the others are isolated in flush), or a bug
                if await self._recovery.failed(exc, pending=len(self._pending)):
                    break
            else:
                self._recovery.succeeded()
        await self._flush_before_stopping()

    async def stop(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self.stop_flush_s
            if self._flushing is not None:  # a write under way now has until then, too
                self._flushing.reschedule(self._deadline)
        self._stop.set()
        self._arrived.set()

    async def flush(self) -> None:
        """Write every pending outcome, a batch at a time. Raises when the database is
        unavailable; what is not written stays pending."""
        while self._pending:
            await write_isolating(self._next_batch(), self._write, self._refused)

    def _next_batch(self) -> list[Outcome]:
        """The oldest pending outcomes, up to ``max_batch``, of distinct jobs: job_finish_many finds
        each row's values by its id (two attempts of one job may both wait after an outage); and of
        one shard, the oldest's: each statement of the write reads one shard."""
        batch: list[Outcome] = []
        ids: set[int] = set()
        shard = self._pending[0].job.shard if self._pending else 0
        for outcome in self._pending:
            if len(batch) == self.max_batch or outcome.job.id in ids:
                break
            if outcome.job.shard != shard:
                continue
            ids.add(outcome.job.id)
            batch.append(outcome)
        return batch

    async def _flush_bounded(self) -> None:
        """``flush``, given up at the stop deadline (none before stopping)."""
        try:
            async with asyncio.timeout_at(self._deadline) as self._flushing:
                await self.flush()
        finally:
            self._flushing = None

    async def _flush_before_stopping(self) -> None:
        wait_s = 0.05
        loop = asyncio.get_running_loop()
        while self._pending and self._deadline is not None and loop.time() < self._deadline:
            try:
                await self._flush_bounded()
            except Exception as exc:  # the database away, or not answering in time
                log.warning("completer_stop_flush_failed", error=str_of(exc), pending=len(self._pending))
                await asyncio.sleep(min(wait_s, max(0.0, self._deadline - loop.time())))
                wait_s = min(wait_s * 2, 0.5)
        if self._pending:
            log.error(
                "job_outcomes_not_written",
                job_ids=[o.job.id for o in self._pending],
                waited_s=self.stop_flush_s,
                reason="the database did not take them while stopping: their leases will expire "
                "and the jobs run again",
            )
            self._pending.clear()

    def _forget(self, written: Sequence[Outcome]) -> None:
        done = {id(o) for o in written}
        self._pending = [o for o in self._pending if id(o) not in done]

    async def _write(self, batch: Sequence[Outcome]) -> None:
        # Another process may have moved one of these rows meanwhile (a rescue): written again,
        # the outcome finds it where it is now (see skiplock.db.moved).
        await retry_moved(lambda: self._write_once(batch))
        self._forget(batch)
        for callback in self.on_written:
            callback()

    async def _write_once(self, batch: Sequence[Outcome]) -> None:
        events = [row for o in batch for row in o.event_rows()]
        # A transaction even for one statement: given up (stopping), it must not commit later.
        workflows = sorted({o.job.workflow_id for o in batch if o.job.workflow_id is not None})
        async with self.order.turn, self.pool.acquire() as conn, conn.transaction():
            if events or workflows or any(o.kind in _HANDED_BACK for o in batch):
                # Every row this transaction will update, locked in id order before any of them
                # (job_finish_many alone locks its own rows so); then the steps' workflows, in id
                # order too, before the step-ended trigger takes them in the rows' order.
                await conn.execute(JOBS.job_lock_rows, sorted({o.job.id for o in batch}), batch[0].job.shard)
                if workflows:
                    await conn.execute(WORKFLOWS.workflow_lock_many, workflows)
            if events:  # the last progress and logs come before the state change
                await write_events(conn, events, self.owner)
            await self._store(conn, batch)

    async def _store(self, conn: AnyConnection, batch: Sequence[Outcome]) -> None:
        shard = batch[0].job.shard  # every outcome of a batch is of one (_next_batch)
        # Sorted by id: job_finish_many finds each row's values by binary search on the ids.
        finished = sorted((o for o in batch if o.kind not in _HANDED_BACK), key=lambda o: o.job.id)
        if finished:
            written = await finish_jobs(
                conn,
                JobFinish(
                    ids=[o.job.id for o in finished],
                    attempts=[o.job.attempt for o in finished],
                    states=[o.kind.value for o in finished],
                    results=[encode_json(o.result) for o in finished],
                    errors=[encode_json(o.error) for o in finished],
                    retry_in_s=[o.retry_in_s for o in finished],
                    progress=[encode_json(o.progress) for o in finished],
                    owner=self.owner,
                    shard=shard,
                ),
            )
            if len(written) != len(finished):
                done = set(written)
                lost = [o.job.id for o in finished if o.job.id not in done]
                log.warning("job_outcomes_discarded", job_ids=lost, reason="lease lost")
        for kind, statement in _HANDED_BACK.items():
            released = [o for o in batch if o.kind == kind]
            if not released:
                continue
            ids, attempts = [o.job.id for o in released], [o.job.attempt for o in released]
            if kind == OutcomeKind.RELEASED:
                rows = await conn.fetch(
                    statement, ids, self.owner, attempts, [o.retry_in_s for o in released], shard
                )
            else:
                rows = await conn.fetch(statement, ids, self.owner, attempts, shard)
            later = {o.job.id for o in released if o.retry_in_s > 0}  # due later: no wake-up now
            await notify_requeued(conn, [r for r in rows if r["id"] not in later])
            if rows:
                log.info(
                    "jobs_released", job_ids=[r["id"] for r in rows], started=kind == OutcomeKind.RELEASED
                )

    async def _refused(self, outcome: Outcome, exc: Exception) -> None:
        """The server refused this outcome alone. Its events are written apart (a refused one is
        dropped), then the outcome again; if that is refused too, the job fails with the reason."""
        async with self.order.turn, self.pool.acquire() as conn, conn.transaction():
            await write_events_isolating(conn, outcome.event_rows(), self.owner)
            try:
                async with conn.transaction():  # a savepoint: a refusal keeps the events
                    await self._store(conn, [outcome])
            except Exception as again:
                if not refused_for_values(again):
                    raise
                await self._fail_not_stored(conn, outcome, again)
        self._forget([outcome])

    async def _fail_not_stored(self, conn: AnyConnection, outcome: Outcome, exc: Exception) -> None:
        job = outcome.job
        metrics.outcomes_not_stored.inc()
        # The server's primary message only: its DETAIL may quote the refused value itself.
        reason = (getattr(exc, "message", None) or str_of(exc))[:_REASON_CHARS]
        fields = {"job_id": job.id, "attempt": job.attempt, "outcome": outcome.kind.value, "error": reason}
        if outcome.kind not in _HANDED_BACK:  # a release carries no value: nothing to fail it for
            try:
                async with conn.transaction():
                    await conn.fetch(
                        JOBS.job_fail_outcome_not_stored,
                        job.id,
                        job.attempt,
                        self.owner,
                        f"the outcome could not be stored: {reason}",
                        job.shard,
                    )
                log.error("job_outcome_not_stored", **fields, recorded="failed")
                return
            except Exception as last:
                if not refused_for_values(last):
                    raise
                fields["error_recording_failure"] = str_of(last)[:_REASON_CHARS]
        # Never retried forever: the lease runs out and the rescuer takes the job.
        log.error("job_outcome_not_stored", **fields, recorded="nothing; the lease will expire")
