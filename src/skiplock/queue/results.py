"""Waiting for a job to finish: what ``GET /jobs/{id}/result?wait=`` and
:meth:`Client.wait_for_result` wait on.

Waiters of a job share one watch. Every state change writes an event whose reference the listener
hands over ('ev:<job>.<seq>,…'); a reference to a watched job marks it due, and one statement a
round reads every due job (``id = ANY($1)``), however many wait: a waiter holds no connection
while it waits. A new watch is due at once, so its job is read after it was registered and a job
that finished in between is not missed; after a listener reconnect every watched job is read again
(what was sent meanwhile is lost). A job that is not there (unknown, or pruned meanwhile) ends its
waits with JobNotFound.

Stopped (the first step of a shutdown), the service ends every wait at once with the job's
latest state: a long poll must not hold a shutdown for its whole wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import ValidationError

from skiplock import metrics
from skiplock.db.sqlfile import Statement, load_statements
from skiplock.errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout
from skiplock.queue.models import FINAL_STATES, AttemptError, JobState
from skiplock.service import Recovery, StopSignal


@dataclass(frozen=True, slots=True)
class ResultStatements:
    job_outcome_many: Statement


RESULTS = load_statements(ResultStatements, "skiplock.queue.sql", "results.sql")


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """Where a job is: its state and, once final, its result and its last attempt's error."""

    job_id: int
    state: JobState
    result: Any = None
    error: AttemptError | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> JobOutcome:
        stored = record["error"]
        error = None
        if isinstance(stored, dict):
            # Not as this release writes it (by hand, say): the outcome stands without it, and the
            # other jobs of the round are not held back by it.
            with contextlib.suppress(ValidationError):
                error = AttemptError.model_validate(stored)
        return cls(record["id"], JobState(record["state"]), record["result"], error)

    def value(self) -> Any:
        """The result of a job that succeeded; JobFailed or JobCancelled for one that did not,
        ResultTimeout for one not final yet."""
        if self.state == JobState.SUCCEEDED:
            return self.result
        if self.state == JobState.CANCELLED:
            raise JobCancelled(
                f"job {self.job_id} was cancelled", job_id=self.job_id, state=self.state, error=self.error
            )
        if self.state == JobState.FAILED:
            why = f": {self.error.type}: {self.error.message}" if self.error is not None else ""
            raise JobFailed(
                f"job {self.job_id} failed{why}", job_id=self.job_id, state=self.state, error=self.error
            )
        raise ResultTimeout(
            f"job {self.job_id} is still {self.state.value}", job_id=self.job_id, state=self.state
        )


@dataclass(eq=False, slots=True)
class _Watch:
    """The waiters of one job: how many, what was read of it, and whether that ends their wait."""

    waiters: int = 0
    latest: JobOutcome | None = None
    missing: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class ResultWaiter:
    """The waits of this process, answered from one read a round (see the module's docstring)."""

    name = "results"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._watched: dict[int, _Watch] = {}
        self._due: set[int] = set()
        self._wake = asyncio.Event()
        self._stop = StopSignal()
        self._running = False
        #: Test hook: rounds read (each one statement, whatever the number of waiters).
        self.reads = 0

    @property
    def waiting(self) -> int:
        """Waits under way in this process."""
        return sum(watch.waiters for watch in self._watched.values())

    async def wait(self, job_id: int, wait_s: float | None) -> JobOutcome:
        """The job's outcome as soon as it is final, else after ``wait_s`` seconds (None: no
        limit) where it is then; JobNotFound for a job that is not there. ``wait_s`` 0 (or a
        service that is not running) reads the job once and returns at once."""
        if (wait_s is not None and wait_s <= 0) or not self._running:
            return await self._read_now(job_id)
        watch = self._watched.get(job_id)
        if watch is None:
            watch = self._watched[job_id] = _Watch()
            self._due.add(job_id)
            self._wake.set()
        watch.waiters += 1
        metrics.result_waiters.inc()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await watch.settled.wait()
        finally:
            metrics.result_waiters.dec()
            watch.waiters -= 1
            if not watch.waiters and self._watched.get(job_id) is watch:
                del self._watched[job_id]
        if watch.missing:
            raise JobNotFound(f"no job with id {job_id}")
        if watch.latest is None:  # never read (the reads failed, or the service stopped first)
            return await self._read_now(job_id)
        return watch.latest

    async def result(self, job_id: int, timeout_s: float | None) -> Any:
        """The job's result once it succeeded; JobFailed (JobCancelled) if it ended otherwise,
        ResultTimeout if it is not final after ``timeout_s`` seconds, JobNotFound."""
        return (await self.wait(job_id, timeout_s)).value()

    async def _read_now(self, job_id: int) -> JobOutcome:
        records = await self.pool.fetch(RESULTS.job_outcome_many, [job_id])
        if not records:
            raise JobNotFound(f"no job with id {job_id}")
        return JobOutcome.from_record(records[0])

    def hint(self, payload: str) -> None:
        """Listener hook for 'ev:<job>.<seq>,…': watched jobs among them are read next round."""
        if not self._watched:
            return
        for ref in payload.split(","):
            job, _, _seq = ref.partition(".")
            if job.isdigit() and int(job) in self._watched:
                self._due.add(int(job))
        if self._due:
            self._wake.set()

    def read_all(self) -> None:
        """After a listener reconnect: notifications may have been lost, every watched job is read."""
        self._due.update(self._watched)
        self._wake.set()

    async def run(self, ready: asyncio.Event) -> None:
        recovery = Recovery(self.name, self._stop)
        self._running = True
        ready.set()
        try:
            while not self._stop.is_set:
                await self._wake.wait()
                self._wake.clear()
                if self._stop.is_set:
                    break
                try:
                    await self._read_due()
                except Exception as exc:  # the waits go on: log, count, back off, read again
                    if await recovery.failed(exc):
                        break
                    self._wake.set()
                else:
                    recovery.succeeded()
        finally:
            self._running = False
            for watch in self._watched.values():  # each wait ends with what is known of its job
                watch.settled.set()

    async def _read_due(self) -> None:
        due = sorted(self._due.intersection(self._watched))
        self._due.clear()
        if not due:
            return
        try:
            records = await self.pool.fetch(RESULTS.job_outcome_many, due)
        except BaseException:
            self._due.update(due)
            raise
        self.reads += 1
        found = {record["id"]: JobOutcome.from_record(record) for record in records}
        for job_id in due:
            watch = self._watched.get(job_id)
            if watch is None:  # every waiter gave up meanwhile
                continue
            outcome = found.get(job_id)
            if outcome is None:
                watch.missing = True
            else:
                watch.latest = outcome
            if outcome is None or outcome.final:
                del self._watched[job_id]  # a later waiter reads the job afresh
                watch.settled.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
