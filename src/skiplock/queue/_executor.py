"""Runs one job: its context, timeout, cancellation, and the outcome handed to the completer."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
import traceback
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.contextvars import STRUCTLOG_KEY_PREFIX, bind_contextvars

from skiplock import metrics, tracing
from skiplock.db.pool import is_unavailable
from skiplock.db.storable import storable_json
from skiplock.errors import InvalidArgumentsError, SkiplockError, Snooze, UnknownTaskError, WorkflowInvalid
from skiplock.fetcher import Fetcher
from skiplock.queue import _workflow_store as workflow_store
from skiplock.queue._completer import Completer, Outcome, OutcomeKind
from skiplock.queue._processes import ChildTaskFailed, TaskProcesses
from skiplock.queue._running import RunningJob, RunningJobs, StopReason
from skiplock.queue._threads import TaskThreads, ThreadExit
from skiplock.queue.client import Client
from skiplock.queue.context import Context, JobInfo
from skiplock.queue.models import ClaimedJob
from skiplock.queue.origin import current_origin
from skiplock.queue.tasks import Task, TaskRegistry
from skiplock.queue.workflows import UpstreamFailure, typed_upstream
from skiplock.service import str_of

log = structlog.get_logger("skiplock.executor")

_TRACEBACK_LINES = 30
#: The outcome label of skiplock_jobs_finished_total: the kinds that hand a run back are one.
_OUTCOMES = {
    OutcomeKind.RETRY: "retried",
    OutcomeKind.SNOOZED: "snoozed",
    OutcomeKind.RELEASED: "released",
    OutcomeKind.UNSTARTED: "released",
}
#: A job whose thread still runs as the process leaves is due again only after this: past the
#: CLI's exit watchdog (grace + 4 s after the signal; the release comes at the grace's end).
THREAD_LEFT_RUNNING_DELAY_S = 10.0


def _log_context_vars(*keys: str) -> tuple[contextvars.ContextVar[Any], ...]:
    """structlog's own context variables for ``keys`` (bound once in a scratch context, to create
    them): set and reset per job by token, what bound_contextvars does without first reading the
    whole context (twice the cost)."""
    scratch = contextvars.Context()
    scratch.run(bind_contextvars, **dict.fromkeys(keys))
    by_name = {var.name: var for var in scratch}
    return tuple(by_name[STRUCTLOG_KEY_PREFIX + key] for key in keys)


_JOB_ID, _TASK, _QUEUE, _ATTEMPT, _REQUEST_ID = _log_context_vars(
    "job_id", "task", "queue", "attempt", "request_id"
)
_Tokens = tuple[contextvars.Token[Any], ...]


def _bind_job_log(job_id: int, task: str, queue: str, attempt: int, request_id: Any) -> _Tokens:
    """A job's log context, as ``bound_contextvars(job_id=…, task=…, …)`` would bind it."""
    return (
        _JOB_ID.set(job_id),
        _TASK.set(task),
        _QUEUE.set(queue),
        _ATTEMPT.set(attempt),
        _REQUEST_ID.set(request_id),
    )


def _unbind_job_log(tokens: _Tokens) -> None:
    job_id, task, queue, attempt, request_id = tokens
    _REQUEST_ID.reset(request_id)
    _ATTEMPT.reset(attempt)
    _QUEUE.reset(queue)
    _TASK.reset(task)
    _JOB_ID.reset(job_id)


class _NotStarted(Exception):
    """The run's lease was not surely held when its task was to begin: it never began."""


_MESSAGE_CHARS = 2000


def describe_error(exc: BaseException, message: str | None = None) -> dict[str, Any]:
    """An error's type, message and trimmed traceback (also what a pool child reports)."""
    try:
        lines = traceback.format_exception(exc)
    except BaseException:  # user code's __str__ or __repr__ may raise anything
        lines = [f"{type(exc).__name__}: <the traceback could not be formatted>\n"]
    return {
        "type": type(exc).__name__,
        "message": (message or str_of(exc))[:_MESSAGE_CHARS],
        "traceback": "".join(lines[-_TRACEBACK_LINES:])[-8000:],
    }


def error_record(job: ClaimedJob, exc: BaseException, message: str | None = None) -> dict[str, Any]:
    """What is kept of one failed attempt: type, message and a trimmed traceback."""
    return _attempt_error(job, describe_error(exc, message))


def _attempt_error(job: ClaimedJob, described: dict[str, Any]) -> dict[str, Any]:
    return {"attempt": job.attempt, **described, "at": datetime.now(UTC).isoformat()}


class Executor:
    def __init__(
        self,
        registry: TaskRegistry,
        client: Client,
        running: RunningJobs,
        completer: Completer,
        http: Fetcher,
        threads: TaskThreads,
        processes: TaskProcesses | None = None,
        process_queues: frozenset[str] = frozenset(),
    ) -> None:
        self.registry = registry
        self.client = client
        self.http = http
        self.running = running
        self.completer = completer
        self.threads = threads
        #: The task process pool: jobs of executor="process" tasks, and of these queues, run there.
        self.processes = processes
        self.process_queues = process_queues
        #: Set when the process is leaving past its grace: stop waiting for threads (they die with it).
        self._abandoned = asyncio.Event()

    def abandon_threads(self) -> None:
        """Let stopped jobs report without waiting for their threads: the process exits next."""
        self._abandoned.set()

    def hand_back(self, job: ClaimedJob) -> None:
        """A claimed job this process will not start: back to its queue, its attempt unused."""
        self.completer.put(Outcome(job, OutcomeKind.UNSTARTED))

    async def run(self, running: RunningJob) -> None:
        """Execute the job and hand its outcome on; never raises."""
        job = running.job
        started = time.perf_counter()
        request_id = (job.origin or {}).get("request_id")
        origin = current_origin.set(job.origin)  # follow-up jobs it enqueues carry the same origin
        bound = _bind_job_log(job.id, job.task, job.queue, job.attempt, request_id)
        # The module's logger resolved once per job: each call through its lazy proxy costs that again.
        job_log = log.bind()
        try:
            job_log.debug("job_started")
            measure = metrics.for_job(job.queue, job.task)
            measure.started.inc()
            if job.run_at is not None:
                measure.wait.observe(max(0.0, (datetime.now(UTC) - job.run_at).total_seconds()))
            try:
                outcome = await self._execute_traced(running)
            except Exception as exc:  # a bug of ours: the job still gets an outcome
                job_log.exception("executor_error")
                outcome = self._failure(job, 1.0, exc)
            finally:
                self.running.remove(job.id)
                duration_s = time.perf_counter() - started
                measure.duration.observe(duration_s)
            # The outcome of a run that went on once fenced is void too (a hand-back is not one).
            if outcome is None or (running.fenced and outcome.kind != OutcomeKind.UNSTARTED):
                job_log.warning("job_abandoned", reason="lease lost")
                return
            outcome.progress = running.progress
            if running.pending or running.dropped_logs:  # written before the outcome, same transaction
                outcome.events = running.take_events()
            self.completer.put(outcome)
            kind = outcome.kind
            metrics.finished(job.queue, job.task, _OUTCOMES.get(kind, kind.value)).inc()
            # Successes at debug: one line per job would be a tenth of a no-op job's cost, and the
            # job row keeps the outcome anyway. Everything else is worth a line at info.
            emit = job_log.debug if kind is OutcomeKind.SUCCEEDED else job_log.info
            emit(
                "job_finished",
                outcome=kind.value,
                duration_ms=round(duration_s * 1000, 2),
                error=outcome.error["message"] if outcome.error else None,
            )
        finally:
            _unbind_job_log(bound)
            current_origin.reset(origin)

    async def _execute_traced(self, running: RunningJob) -> Outcome | None:
        """The attempt in its own span (when tracing is on), child of the trace that enqueued it."""
        if tracing.provider() is None:  # the common case, without a context manager per job
            return await self._execute(running)
        job = running.job
        attributes = {
            "skiplock.job_id": job.id,
            "skiplock.task": job.task,
            "skiplock.queue": job.queue,
            "skiplock.attempt": job.attempt,
        }
        with tracing.job_span(job.origin, job.task, attributes) as span:
            outcome = await self._execute(running)
            if outcome is not None:
                tracing.mark_outcome(
                    span, outcome.kind.value, outcome.error["message"] if outcome.error else None
                )
            return outcome

    async def _execute(self, running: RunningJob) -> Outcome | None:
        job = running.job
        if not running.holds_lease():  # paused between the claim and now: never begun, handed back
            return Outcome(job, OutcomeKind.UNSTARTED)
        stopped = running.stop_reason  # stopped before its first step (see _lease.fenced): never begun
        if stopped is StopReason.CANCELLED:
            return Outcome(job, OutcomeKind.CANCELLED)
        if stopped is StopReason.SHUTDOWN:  # back to its queue, its attempt unused
            return Outcome(job, OutcomeKind.UNSTARTED)
        try:
            spec = self.registry.get(job.task)
            args = spec.validate_args(job.args)
        except (UnknownTaskError, InvalidArgumentsError) as exc:
            return Outcome(job, OutcomeKind.FAILED, error=error_record(job, exc))
        ctx = Context(
            JobInfo(job.id, job.task, job.queue, job.attempt, job.max_attempts),
            client=self.client,
            on_event=self.running.event_sink(running),  # this attempt's, never a later one's
            http=self.http,
            lease=running,
        )
        upstream: dict[str, Any] = {}
        if job.workflow_id is not None:  # a step: what its dependencies returned, as it declared
            try:
                upstream = await workflow_store.upstream(self.client.pool, job.id)
                ctx.upstream = typed_upstream(upstream, spec.upstream)
            except WorkflowInvalid as exc:  # the same next time: fails at once
                return Outcome(job, OutcomeKind.FAILED, error=error_record(job, exc))
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # The database away before the task began: handed back, its attempt unused.
                log.warning("upstream_unreadable", job_id=job.id, error=str_of(exc))
                return Outcome(job, OutcomeKind.UNSTARTED)
        timeout = None if job.timeout_s is None else asyncio.timeout(job.timeout_s)
        in_process = self.in_process(spec, job)
        call = (
            self._call_in_process(spec, running, upstream, timeout)
            if in_process
            else self._call(spec, ctx, args, running)
        )
        try:
            if timeout is None:  # most jobs: no Timeout (and its current_task lookups) per job
                result = await call
            else:
                async with timeout:
                    result = await call
            # Plain JSON whatever the task returned (a lone surrogate makes pydantic raise).
            return Outcome(job, OutcomeKind.SUCCEEDED, result=storable_json(result))
        except asyncio.CancelledError as exc:
            reason = running.stop_reason
            current = asyncio.current_task()
            if reason is None:
                if current is not None and current.cancelling():
                    raise  # a cancel from outside (the engine torn down): not ours to report
                itself = "the task raised CancelledError itself"  # nobody asked: a failure
                return self._failure(job, spec.backoff.delay(job.attempt), exc, itself)
            if current is not None:
                current.uncancel()
            if reason is StopReason.CANCELLED:
                return Outcome(job, OutcomeKind.CANCELLED)
            if reason is StopReason.SHUTDOWN:
                delay = THREAD_LEFT_RUNNING_DELAY_S if running.thread_left_running else 0.0
                return Outcome(job, OutcomeKind.RELEASED, retry_in_s=delay)
            return None
        except TimeoutError as exc:
            # Only the job's own timeout is reported as such; a task's own TimeoutError is a failure.
            expired = timeout is not None and timeout.expired()
            message = f"timed out after {job.timeout_s:g}s" if expired else None
            if expired and in_process:
                message = f"hit its time limit of {job.timeout_s:g}s: its process was killed"
            return self._failure(job, spec.backoff.delay(job.attempt), exc, message)
        except _NotStarted:
            return Outcome(job, OutcomeKind.UNSTARTED)
        except ChildTaskFailed as failed:  # raised in a pool child: recorded as the child saw it
            error = _attempt_error(job, failed.error)
            if failed.retryable and job.attempt < job.max_attempts:
                delay = spec.backoff.delay(job.attempt)
                return Outcome(job, OutcomeKind.RETRY, error=error, retry_in_s=delay)
            return Outcome(job, OutcomeKind.FAILED, error=error)
        except Snooze as snooze:  # no error: the job waits, and this attempt is not held against it
            return Outcome(job, OutcomeKind.SNOOZED, retry_in_s=snooze.seconds)
        except SkiplockError as exc:
            if not exc.retryable:  # PermanentJobError, a 404, a refused address: the same next time
                return Outcome(job, OutcomeKind.FAILED, error=error_record(job, exc))
            return self._failure(job, spec.backoff.delay(job.attempt), exc)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit: the task's own
            return self._failure(job, spec.backoff.delay(job.attempt), exc)

    async def _call(self, spec: Task[Any], ctx: Context, args: Any, running: RunningJob) -> Any:
        if spec.is_async:
            try:
                return await spec.fn(ctx, args)
            except ThreadExit as carried:  # a future's GeneratorExit (see _lease.fenced)
                raise carried.error from None
        call = functools.partial(contextvars.copy_context().run, spec.fn, ctx, args)
        if not running.holds_lease():  # a thread cannot be stopped: never one without the lease
            raise _NotStarted
        thread = self.threads.submit(call)
        try:
            return await asyncio.shield(thread)
        except ThreadExit as carried:
            raise carried.error from None  # raised here, in this frame, it is an ordinary failure
        except asyncio.CancelledError:
            # A thread cannot be interrupted. Reporting now (cancelled, timed out, released)
            # would let the job start again while this thread still runs it: wait for it first.
            running.waiting_for_thread = True  # not cut short there once fenced (see _lease.fenced)
            try:
                await self._thread_returned(thread)
            finally:
                running.waiting_for_thread = False
            running.thread_left_running = not thread.done()  # abandoned: the process is leaving
            raise

    def in_process(self, spec: Task[Any], job: ClaimedJob) -> bool:
        """Whether the job runs in the task process pool (its task's choice, or its queue's)."""
        if self.processes is None:
            return False
        return spec.executor == "process" or (spec.executor is None and job.queue in self.process_queues)

    async def _call_in_process(
        self,
        spec: Task[Any],
        running: RunningJob,
        upstream: dict[str, Any],
        time_limit: asyncio.Timeout | None,
    ) -> Any:
        """Run the job in a pool child. Stopped (a cancel, its time limit, a lost lease, the end of
        the shutdown grace), the child is killed, and reaped before the stop is reported."""
        assert self.processes is not None
        job = running.job
        if time_limit is not None:
            # The time limit is the task's, in its child: not the wait for a child, nor its start.
            time_limit.reschedule(None)
        child = await self.processes.acquire()
        try:
            if not running.holds_lease():  # waited for a child past its lease: never begun
                raise _NotStarted
            if time_limit is not None and job.timeout_s is not None:
                time_limit.reschedule(asyncio.get_running_loop().time() + job.timeout_s)
            sink = self.running.event_sink(running)  # this attempt's, never a later one's
            request = {
                "task": job.task,
                "module": getattr(spec.fn, "__module__", None),
                "job": [job.id, job.task, job.queue, job.attempt, job.max_attempts],
                "args": job.args,
                "upstream": {
                    step: {"failure": value.as_json()}
                    if isinstance(value, UpstreamFailure)
                    else {"result": value}
                    for step, value in upstream.items()
                },
            }
            try:
                return await child.call(request, lambda kind, data: sink(job.id, kind, data))
            except asyncio.CancelledError:
                running.waiting_for_thread = True  # the reaping is not cut short (see _lease.fenced)
                try:
                    await child.kill()
                finally:
                    running.waiting_for_thread = False
                    running.thread_left_running = child.alive  # not reaped: handled as a thread's
                raise
        finally:
            await self.processes.release(child)

    async def _thread_returned(self, thread: asyncio.Future[Any]) -> None:
        """Wait for ``thread`` whatever else cancels us meanwhile (the cancel poll, a timeout, a
        lease check), unless the process is leaving past its grace."""
        while not thread.done() and not self._abandoned.is_set():
            abandoned = asyncio.ensure_future(self._abandoned.wait())
            try:
                await asyncio.wait({thread, abandoned}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                continue  # already stopping: the first cancel is the one re-raised after the wait
            finally:
                abandoned.cancel()

    @staticmethod
    def _failure(
        job: ClaimedJob, retry_in_s: float, exc: BaseException, message: str | None = None
    ) -> Outcome:
        error = error_record(job, exc, message)
        if job.attempt < job.max_attempts:
            return Outcome(job, OutcomeKind.RETRY, error=error, retry_in_s=retry_in_s)
        return Outcome(job, OutcomeKind.FAILED, error=error)
