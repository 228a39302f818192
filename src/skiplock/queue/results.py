"""Waiting for a job or a workflow to finish: what ``GET /jobs/{id}/result?wait=``,
``GET /workflows/{id}/result?wait=``, :meth:`Client.wait_for_result` and
:meth:`Client.wait_for_workflow` wait on.

Waiters of a job share one watch. Every state change writes an event whose reference the listener
hands over ('ev:<job>.<seq>,…'); a reference to a watched job marks it due, and one statement a
round reads every due job (``id = ANY($1)``), however many wait: a waiter holds no connection
while it waits. A new watch is due at once, so its job is read after it was registered and a job
that finished in between is not missed; after a listener reconnect every watched job is read again
(what was sent meanwhile is lost). A job that is not there (unknown, or pruned meanwhile) ends its
waits with JobNotFound.

A workflow is watched the same way, keyed by its id: the transaction that makes its row final
sends 'wf:<id>' (migration 0016's trigger), which marks it due; its round reads every due
workflow in one statement too, its result (its last steps' results) once it is final.

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
from skiplock.errors import (
    JobCancelled,
    JobFailed,
    JobNotFound,
    ResultTimeout,
    WorkflowFailed,
    WorkflowNotFound,
)
from skiplock.queue.models import FINAL_STATES, AttemptError, JobState
from skiplock.queue.workflows import FailedStep, WorkflowState
from skiplock.service import Recovery, StopSignal


@dataclass(frozen=True, slots=True)
class ResultStatements:
    job_outcome_many: Statement
    workflow_outcome_many: Statement


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


def _attempt_error(stored: Any) -> AttemptError | None:
    if isinstance(stored, dict):
        with contextlib.suppress(ValidationError):  # not as this release writes it: left out
            return AttemptError.model_validate(stored)
    return None


@dataclass(frozen=True, slots=True)
class WorkflowOutcome:
    """Where a workflow is: its state and, once final, its result (its last steps' results by
    name, in id order; one that did not succeed as {state, error}) and, unless it succeeded, the
    step that failed."""

    workflow_id: int
    state: WorkflowState
    final: bool
    result: dict[str, Any] | None = None
    error: FailedStep | None = None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> WorkflowOutcome:
        if not record["final"]:
            return cls(record["id"], record["state"], False)
        names, results = record["leaf_names"] or [], record["leaf_results"] or []
        error = None
        if record["failed_job_id"] is not None:
            error = FailedStep(
                step=record["failed_step"],
                job_id=record["failed_job_id"],
                state=JobState(record["failed_state"]),
                error=_attempt_error(record["failed_error"]),
            )
        return cls(record["id"], record["state"], True, dict(zip(names, results, strict=True)), error)

    def value(self) -> dict[str, Any]:
        """The result of a workflow that succeeded; WorkflowFailed for one that failed or was
        cancelled, ResultTimeout for one not final yet."""
        if self.final and self.state == "succeeded":
            return self.result or {}
        if self.final:
            why = ""
            if self.error is not None:
                why = f": step {self.error.step!r} {self.error.state.value}"
                if self.error.error is not None:
                    why += f" ({self.error.error.type}: {self.error.error.message})"
            raise WorkflowFailed(
                f"workflow {self.workflow_id} {self.state}{why}",
                workflow_id=self.workflow_id,
                state=self.state,
                error=self.error,
                result=self.result,
            )
        raise ResultTimeout(
            f"workflow {self.workflow_id} is still {self.state}",
            workflow_id=self.workflow_id,
            state=self.state,
        )


Outcome = JobOutcome | WorkflowOutcome
#: What is watched: ("job", id) or ("wf", id).
_Key = tuple[str, int]
_JOB, _WORKFLOW = "job", "wf"


@dataclass(eq=False, slots=True)
class _Watch:
    """The waiters of one job (or workflow): how many, what was read of it, and whether that ends
    their wait."""

    waiters: int = 0
    latest: Outcome | None = None
    missing: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class ResultWaiter:
    """The waits of this process, answered from one read a round (see the module's docstring)."""

    name = "results"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._watched: dict[_Key, _Watch] = {}
        self._due: set[_Key] = set()
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
        outcome = await self._wait((_JOB, job_id), wait_s)
        assert isinstance(outcome, JobOutcome)
        return outcome

    async def wait_workflow(self, workflow_id: int, wait_s: float | None) -> WorkflowOutcome:
        """As :meth:`wait`, for a workflow: its outcome as soon as its row is final, else after
        ``wait_s`` seconds where it is then; WorkflowNotFound for one that is not there."""
        outcome = await self._wait((_WORKFLOW, workflow_id), wait_s)
        assert isinstance(outcome, WorkflowOutcome)
        return outcome

    async def _wait(self, key: _Key, wait_s: float | None) -> Outcome:
        if (wait_s is not None and wait_s <= 0) or not self._running:
            return await self._read_now(key)
        watch = self._watched.get(key)
        if watch is None:
            watch = self._watched[key] = _Watch()
            self._due.add(key)
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
            if not watch.waiters and self._watched.get(key) is watch:
                del self._watched[key]
        if watch.missing:
            raise _not_found(key)
        if watch.latest is None:  # never read (the reads failed, or the service stopped first)
            return await self._read_now(key)
        return watch.latest

    async def result(self, job_id: int, timeout_s: float | None) -> Any:
        """The job's result once it succeeded; JobFailed (JobCancelled) if it ended otherwise,
        ResultTimeout if it is not final after ``timeout_s`` seconds, JobNotFound."""
        return (await self.wait(job_id, timeout_s)).value()

    async def workflow_result(self, workflow_id: int, timeout_s: float | None) -> dict[str, Any]:
        """The workflow's result once it succeeded; WorkflowFailed if it failed or was cancelled,
        ResultTimeout if it is not final after ``timeout_s`` seconds, WorkflowNotFound."""
        return (await self.wait_workflow(workflow_id, timeout_s)).value()

    async def _read_now(self, key: _Key) -> Outcome:
        found = await self._read(key[0], [key[1]])
        if key[1] not in found:
            raise _not_found(key)
        return found[key[1]]

    async def _read(self, kind: str, ids: list[int]) -> dict[int, Outcome]:
        """One statement for every id of one kind."""
        if kind == _JOB:
            records = await self.pool.fetch(RESULTS.job_outcome_many, ids)
            return {r["id"]: JobOutcome.from_record(r) for r in records}
        records = await self.pool.fetch(RESULTS.workflow_outcome_many, ids)
        return {r["id"]: WorkflowOutcome.from_record(r) for r in records}

    def hint(self, payload: str) -> None:
        """Listener hook for 'ev:<job>.<seq>,…': watched jobs among them are read next round."""
        if not self._watched:
            return
        for ref in payload.split(","):
            job, _, _seq = ref.partition(".")
            if job.isdigit() and (_JOB, int(job)) in self._watched:
                self._due.add((_JOB, int(job)))
        if self._due:
            self._wake.set()

    def workflow_hint(self, payload: str) -> None:
        """Listener hook for 'wf:<workflow>': a watched workflow is read next round."""
        if payload.isdigit() and (_WORKFLOW, int(payload)) in self._watched:
            self._due.add((_WORKFLOW, int(payload)))
            self._wake.set()

    def read_all(self) -> None:
        """After a listener reconnect: notifications may have been lost, every watched job (and
        workflow) is read."""
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
        try:
            for kind in (_JOB, _WORKFLOW):
                ids = [key[1] for key in due if key[0] == kind]
                if ids:
                    self._settle(kind, ids, await self._read(kind, ids))
        except BaseException:
            self._due.update(due)  # read again after the back-off (a kind read already: harmless)
            raise

    def _settle(self, kind: str, ids: list[int], found: dict[int, Outcome]) -> None:
        self.reads += 1
        for item_id in ids:
            key = (kind, item_id)
            watch = self._watched.get(key)
            if watch is None:  # every waiter gave up meanwhile
                continue
            outcome = found.get(item_id)
            if outcome is None:
                watch.missing = True
            else:
                watch.latest = outcome
            if outcome is None or outcome.final:
                del self._watched[key]  # a later waiter reads it afresh
                watch.settled.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def _not_found(key: _Key) -> Exception:
    if key[0] == _JOB:
        return JobNotFound(f"no job with id {key[1]}")
    return WorkflowNotFound(f"no workflow with id {key[1]}")
