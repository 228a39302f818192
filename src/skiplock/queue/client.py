"""Enqueue, read, cancel and retry jobs; pause and resume queues. What the API and tasks call."""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import asyncpg
from pydantic import BaseModel

from skiplock import metrics, tracing
from skiplock.db.copy import copy_rows
from skiplock.db.moved import retry_moved
from skiplock.db.pool import AnyConnection, PoolOrConnection, create_pool
from skiplock.db.replica import ReadRoute
from skiplock.errors import (
    ConfigError,
    ConflictError,
    InvalidArgumentsError,
    InvalidStateError,
    JobNotFound,
    LeaseLostError,
    SkiplockError,
)
from skiplock.queue import _workflow_store as workflow_store
from skiplock.queue import bulk as bulk_actions
from skiplock.queue._hub import JobEvent
from skiplock.queue._listener import Listener
from skiplock.queue._statements import (
    EVENTS,
    JOBS,
    QUEUES,
    WORKFLOWS,
    JobInsert,
    insert_child_job,
    insert_job,
    reserve_job_ids,
)
from skiplock.queue._waker import Waker
from skiplock.queue.bulk import BulkAction, BulkPlan, BulkStarted, JobFilter
from skiplock.queue.handles import default_client_or_none, set_default_client
from skiplock.queue.models import (
    FailureGroup,
    Job,
    JobSearch,
    JobState,
    QueueInfo,
    QueueLimitsInfo,
    ResolvedJob,
)
from skiplock.queue.origin import current_origin
from skiplock.queue.results import ResultWaiter
from skiplock.queue.schedules import Schedules
from skiplock.queue.stats import Stats
from skiplock.queue.tasks import MAX_PRIORITY, TaskRegistry, registered
from skiplock.queue.workers import Workers
from skiplock.queue.workflows import Step, Workflow, WorkflowInfo
from skiplock.queue_names import check_queue_name
from skiplock.rates import Rate

_UNIQUE_RACE_RETRIES = 5
_MAX_EXPIRY_S = 366 * 86400.0

#: A search (:meth:`Client.search_jobs`) reads at most this many ids a page, for at most this long.
SEARCH_WINDOW = 100_000
SEARCH_TIMEOUT_S = 2.0
#: Failures (:meth:`Client.failures`) are grouped among this many newest failed jobs.
FAILURES_WINDOW = 10_000


def _like_escaped(text: str) -> str:
    """``text`` matched literally by LIKE (its wildcards and escape character escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """A job on its way in: what the API, :meth:`Client.enqueue` and a task's ``ctx.enqueue`` hand
    to :meth:`Client.enqueue_request`, and :meth:`Client.enqueue_many` takes a list of. Options
    left None take the task's defaults; ``run_at`` or ``delay_s`` (neither: now). ``unique_key``
    is for one job at a time (a bulk enqueue refuses it). ``expires_at`` or ``expires_in_s``
    (neither: never): not started by then, the job is never claimed and ends cancelled, with an
    error of type ``expired``; one already past at enqueue is refused."""

    task: str
    args: Any = None
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    delay_s: float | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    unique_key: str | None = None
    expires_in_s: float | None = None
    expires_at: datetime | None = None

    @property
    def overrides_defaults(self) -> bool:
        return not (
            self.priority is None
            and self.run_at is None
            and self.delay_s is None
            and self.max_attempts is None
            and self.timeout_s is None
        )


_COPY_COLUMNS = (
    "id", "queue", "task", "args", "priority", "run_at", "max_attempts", "timeout_s", "origin", "expires_at",
    "concurrency_key", "shard",
)  # fmt: skip


def _origin() -> dict[str, Any] | None:
    """Where the job comes from: the request (or job) enqueueing it, and the active trace."""
    origin = {**(current_origin.get() or {}), **tracing.current_context()}
    return origin or None


def _start(now: datetime, request: EnqueueRequest) -> datetime:
    if request.run_at is not None:
        return request.run_at
    if request.delay_s:
        return now + timedelta(seconds=request.delay_s)
    return now


def _expiry(now: datetime, request: EnqueueRequest) -> datetime | None:
    if request.expires_in_s is not None:
        return now + timedelta(seconds=request.expires_in_s)
    return request.expires_at


def _check_expiry(expires_in_s: float | None, expires_at: datetime | None) -> None:
    """An expiry already past at enqueue is refused, not accepted for a job that could never run:
    it is a mistake (a unit, a clock, a stale value), better told at once than as a 201 for a job
    cancelled unseen a moment later."""
    problems = []
    if expires_in_s is not None and expires_at is not None:
        problems.append("give expires_at or expires_in_s, not both")
    if expires_in_s is not None and not (math.isfinite(expires_in_s) and 0 < expires_in_s <= _MAX_EXPIRY_S):
        problems.append("expires_in_s must be positive, at most 366 days")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            problems.append("expires_at needs a timezone")
        elif expires_at <= datetime.now(UTC):
            problems.append("expires_at is already past")
    if problems:
        raise InvalidArgumentsError("; ".join(problems), errors=problems)


def _check_queue(queue: str) -> None:
    try:
        check_queue_name(queue)
    except ValueError as exc:
        raise InvalidArgumentsError(str(exc), errors=[{"field": "queue", "message": str(exc)}]) from exc


def _check_options(
    priority: int,
    max_attempts: int,
    timeout_s: float | None,
    delay_s: float | None,
    run_at: datetime | None,
) -> None:
    problems = []
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        problems.append(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    if max_attempts < 1:
        problems.append("max_attempts must be at least 1")
    if timeout_s is not None and timeout_s <= 0:
        problems.append("timeout_s must be positive")
    if delay_s is not None and delay_s < 0:
        problems.append("delay_s must not be negative")
    if delay_s is not None and run_at is not None:
        problems.append("give run_at or delay_s, not both")
    if run_at is not None and run_at.tzinfo is None:
        problems.append("run_at needs a timezone")
    if problems:
        raise InvalidArgumentsError("; ".join(problems), errors=problems)


class Client:
    """The engine's public face. ``conn=`` on enqueue joins the caller's transaction."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: TaskRegistry,
        *,
        task_pool: asyncpg.Pool | None = None,
        reads: ReadRoute | None = None,
    ) -> None:
        #: The engine's statements' pool (with the engine, not reset between uses: see Engine.pool).
        self.pool = pool
        #: What tasks get as ``ctx.pool`` (without the engine's statement limits).
        self.task_pool = task_pool or pool
        self.registry = registry
        self.schedules = Schedules(pool, registry)
        #: The fleet: every process's row, and requests to one (quiet, resume, stop, concurrency).
        self.workers = Workers(pool)
        #: The per-minute rollup's series (the dashboard's charts).
        #: Where the reads that may lag go (lists, searches, counts, charts): a read replica while
        #: it keeps up, else ``pool``. A job's own read (get, events) and every write use ``pool``.
        self.reads = reads or ReadRoute(pool)
        self.stats = Stats(self.reads)
        self._overview: tuple[float, list[QueueInfo]] | None = None  # (monotonic time, queues)
        #: Set by the engine: wakes workers for enqueues made side by side (see _waker.py).
        self.waker: Waker | None = None
        self._enqueuing = 0  # enqueues of this client under way, on its pool
        #: Set by the engine: the waits of :meth:`wait_for_result` (see results.py).
        self.results: ResultWaiter | None = None
        self._listen_dsn: str | None = None  # set by connect(): the client owns its pool; LISTENs here
        self._replaced: Client | None = None  # the default client before connect()
        self._closed = False
        self._services: list[Listener | ResultWaiter] = []
        self._service_tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        registry: TaskRegistry | None = None,
        min_size: int = 1,
        max_size: int = 10,
        transaction_pooler: bool = False,
        listen_dsn: str | None = None,
    ) -> Client:
        """A client outside a running skiplock process (a web app enqueueing, a script): its own
        pool on ``dsn``; the tasks it checks args against are ``registry``, else every ``@task``
        imported so far (built-ins included). It becomes the client ``task.enqueue(...)`` uses.
        ``transaction_pooler``: ``dsn`` is a pooler in transaction mode; the LISTEN connection that
        result waits use then goes to ``listen_dsn`` (a direct URL; default ``dsn``).
        Close it with ``await client.close()``, or use ``async with await Client.connect(dsn)``."""
        pool = await create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            application_name="skiplock-client",
            transaction_pooler=transaction_pooler,
        )
        client = cls(pool, registry if registry is not None else registered)
        client._listen_dsn = listen_dsn or dsn
        client._replaced = set_default_client(client)
        return client

    async def close(self) -> None:
        """Close what :meth:`connect` opened: its pool, and the LISTEN connection its first wait
        for a result started (a client of an engine is closed with the engine)."""
        self._closed = True
        if default_client_or_none() is self:
            # The one it replaced, unless that was closed meanwhile (clients closed out of order):
            # then the one before it, and so on.
            replaced = self._replaced
            while replaced is not None and replaced._closed:
                replaced = replaced._replaced
            set_default_client(replaced)
        if self._listen_dsn is None:
            return
        for service in self._services:
            await service.stop()
        if self._service_tasks:
            await asyncio.gather(*self._service_tasks, return_exceptions=True)
        self._services, self._service_tasks = [], []
        await self.pool.close()

    async def _listen_for_results(self) -> ResultWaiter:
        """A connected client's own result waits: a listener and a waiter, as an engine runs them."""
        assert self._listen_dsn is not None
        listener = Listener(self._listen_dsn)
        waiter = ResultWaiter(self.pool)
        listener.subscribe("ev", waiter.hint)
        listener.subscribe("wf", waiter.workflow_hint)
        listener.on_reconnect(waiter.read_all)
        for service in (listener, waiter):
            ready = asyncio.Event()
            task = asyncio.create_task(service.run(ready), name=f"skiplock-client:{service.name}")
            self._services.append(service)
            self._service_tasks.append(task)
            await ready.wait()
        return waiter

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _resolve(self, request: EnqueueRequest, *, internal: bool = False) -> ResolvedJob:
        """Validate one job against its task and fill in the task's defaults; an internal task's
        job only when the caller is its own action (``internal``)."""
        spec = self.registry.get(request.task)
        if not internal:
            spec.check_public()
        args = request.args
        if isinstance(args, BaseModel) and not isinstance(args, spec.args):
            args = args.model_dump()  # another model: validate its fields like any input
        model = args if isinstance(args, spec.args) else spec.validate_args(args or {})
        dumped = spec.dump_args(model)
        resolved = ResolvedJob(
            queue=request.queue or spec.queue,
            task=request.task,
            args=dumped,
            priority=spec.priority if request.priority is None else request.priority,
            max_attempts=spec.max_attempts if request.max_attempts is None else request.max_attempts,
            timeout_s=spec.timeout_s if request.timeout_s is None else request.timeout_s,
            concurrency_key=spec.key_of(model, dumped),
        )
        if request.queue is not None:  # the task's own queue was checked when it was declared
            _check_queue(request.queue)
        if request.overrides_defaults:  # the task's own defaults were checked when it was declared
            _check_options(
                resolved.priority, resolved.max_attempts, resolved.timeout_s, request.delay_s, request.run_at
            )
        if request.expires_in_s is not None or request.expires_at is not None:
            _check_expiry(request.expires_in_s, request.expires_at)
        return resolved

    async def enqueue(
        self,
        task: str,
        args: Any = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay_s: float | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        unique_key: str | None = None,
        expires_in_s: float | None = None,
        expires_at: datetime | None = None,
        conn: AnyConnection | None = None,
    ) -> Job:
        """:meth:`enqueue_request` for a request written out as arguments:
        ``await client.enqueue("thumbnail", {"url": u}, delay_s=10)``."""
        request = EnqueueRequest(
            task,
            args,
            queue,
            priority,
            run_at,
            delay_s,
            max_attempts,
            timeout_s,
            unique_key,
            expires_in_s,
            expires_at,
        )
        return await self.enqueue_request(request, conn=conn)

    async def enqueue_request(self, request: EnqueueRequest, *, conn: AnyConnection | None = None) -> Job:
        """Validate the request's ``args`` against its task's model and insert the job (waking a
        worker on commit).

        With a live job of the same ``unique_key``, that job is returned with ``created=False``.
        """
        r = self._resolve(request)
        if conn is not None:  # the caller's transaction: the insert's own NOTIFY goes at its commit
            return await self._insert(conn, request, r, wake_later=False)
        # Beside another enqueue, the insert does not notify: one NOTIFY after both commits does.
        waker = self.waker if self.waker is not None and self.waker.running and self._enqueuing else None
        self._enqueuing += 1
        try:
            job = await self._insert(self.pool, request, r, wake_later=waker is not None)
        except BaseException:
            if waker is not None and waker.running:  # it may have committed, its reply lost
                waker.wake(r.queue)
            raise
        finally:
            self._enqueuing -= 1
        if waker is not None and job.created and job.run_at <= job.created_at:
            if waker.running:
                waker.wake(job.queue)
            else:  # stopped meanwhile, its last wake-ups sent: this one goes now
                await self.pool.execute(JOBS.notify_queued, [job.queue])
        return job

    async def _insert(
        self,
        target: PoolOrConnection,
        request: EnqueueRequest,
        r: ResolvedJob,
        *,
        wake_later: bool,
        child: tuple[int, str] | None = None,
    ) -> Job:
        """The job inserted, or the live job holding its ``unique_key``; with ``child`` (the
        parent's id and the child key), the child that parent already made under that key first."""
        params = JobInsert(
            queue=r.queue,
            task=r.task,
            args=r.args,
            priority=r.priority,
            run_at=request.run_at,
            delay_s=request.delay_s,
            max_attempts=r.max_attempts,
            timeout_s=r.timeout_s,
            unique_key=request.unique_key,
            origin=_origin(),
            wake_later=wake_later,
            expires_at=request.expires_at,
            expires_in_s=request.expires_in_s,
            concurrency_key=r.concurrency_key,
        )
        for _ in range(_UNIQUE_RACE_RETRIES):
            if child is None:
                record = await insert_job(target, params)
            else:
                record = await insert_child_job(target, params, *child)
            if record is not None:
                job = Job.from_record(record)
                if job.created:
                    metrics.for_job(job.queue, job.task).enqueued.inc()
                return job
            # The live job holding the key finished between our insert and read: insert again.
        raise ConflictError(f"unique_key {request.unique_key!r} is contended; try again")

    async def enqueue_from(
        self,
        job_id: int,
        attempt: int,
        owner: str,
        task: str,
        args: Any = None,
        *,
        conn: AnyConnection | None = None,
        child_key: str | None = None,
        **options: Any,
    ) -> Job:
        """:meth:`enqueue` on behalf of a running job, in one transaction with its row locked while
        the run still holds its lease (running, at ``attempt``, under ``owner``); else
        :class:`LeaseLostError` and nothing is written. What a task's ``ctx.enqueue`` calls.

        With ``child_key``, the job is the parent's child under that key, made once: a later run of
        the parent (a retry, a rescue) asking for the same key gets that child back (``created``
        False), whatever its state; its ``unique_key`` counts only when the child is new."""
        request = EnqueueRequest(task, args, **options)

        async def guarded(target: AnyConnection) -> Job:
            try:
                owned = await target.fetchval(JOBS.job_lock_owned, job_id, attempt, owner)
            except asyncpg.SerializationError as exc:  # it waited on a rescue that moved the row
                raise LeaseLostError(f"job {job_id} attempt {attempt} no longer holds its lease") from exc
            if owned is None:
                raise LeaseLostError(f"job {job_id} attempt {attempt} no longer holds its lease")
            if child_key is None:
                return await self.enqueue_request(request, conn=target)
            resolved = self._resolve(request)
            return await self._insert(target, request, resolved, wake_later=False, child=(job_id, child_key))

        if conn is not None:
            async with conn.transaction():
                return await guarded(conn)
        async with self.pool.acquire() as own, own.transaction():
            return await guarded(own)

    async def enqueue_many(
        self, requests: Sequence[EnqueueRequest], *, conn: AnyConnection | None = None
    ) -> list[int]:
        """Validate every job first (the first bad one raises, naming its index, and nothing is
        written), then write them all with one COPY. Returns the new ids in order. A ``unique_key``
        needs :meth:`enqueue_request`, one job at a time."""
        resolved = self._resolve_many(requests)
        if not resolved:
            return []
        if conn is None:
            async with self.pool.acquire() as own, own.transaction():
                return await self._copy_jobs(own, requests, resolved)
        async with conn.transaction():
            return await self._copy_jobs(conn, requests, resolved)

    async def _copy_jobs(
        self, conn: AnyConnection, requests: Sequence[EnqueueRequest], resolved: list[ResolvedJob]
    ) -> list[int]:
        # The transaction's clock, as the column default would be, and the ids, in order.
        now, ids, shards = await reserve_job_ids(conn, len(resolved), (r.queue for r in resolved))
        origin = _origin()
        rows = (
            (
                job_id,
                r.queue,
                r.task,
                r.args,
                r.priority,
                _start(now, q),
                r.max_attempts,
                r.timeout_s,
                origin,
                _expiry(now, q),
                r.concurrency_key,
                shards[r.queue],
            )
            for job_id, q, r in zip(ids, requests, resolved, strict=True)
        )
        await copy_rows(conn, "jobs", _COPY_COLUMNS, rows)
        for (queue, task), count in collections.Counter((r.queue, r.task) for r in resolved).items():
            metrics.for_job(queue, task).enqueued.inc(count)
        return ids

    def _resolve_many(self, requests: Sequence[EnqueueRequest]) -> list[ResolvedJob]:
        resolved = []
        for index, request in enumerate(requests):
            if request.unique_key is not None:
                message = "unique_key needs one job at a time"
                raise InvalidArgumentsError(
                    f"job {index}: {message}",
                    index=index,
                    errors=[{"field": "unique_key", "message": message}],
                )
            try:
                resolved.append(self._resolve(request))
            except SkiplockError as exc:
                raise type(exc)(f"job {index}: {exc.message}", index=index, **exc.extra) from exc
        return resolved

    async def get(self, job_id: int) -> Job:
        record = await self.pool.fetchrow(JOBS.job_get, job_id)
        if record is None:
            raise JobNotFound(f"no job with id {job_id}")
        return Job.from_record(record)

    async def wait_for_result(self, job_id: int, timeout_s: float | None = 30) -> Any:
        """The job's result once it has succeeded, waiting up to ``timeout_s`` seconds (None: no
        limit) on the engine's notifications. Raises JobFailed (JobCancelled when cancelled) with
        the job's state and last error if it ended otherwise, ResultTimeout (a TimeoutError) if it
        is not final in time, JobNotFound for an unknown job."""
        return await (await self._waiter("wait_for_result")).result(job_id, timeout_s)

    async def _waiter(self, what: str) -> ResultWaiter:
        if self.results is None:
            if self._listen_dsn is None:
                raise ConfigError(f"{what} needs a started engine or Client.connect (to LISTEN)")
            self.results = await self._listen_for_results()
        return self.results

    async def events(self, job_id: int, *, after: int = 0, limit: int = 200) -> list[JobEvent]:
        """A page of a job's events (state, progress, log), oldest first: at most ``limit`` with
        seq > ``after``; the next page starts after the last one's seq. Empty for an unknown job."""
        rows = await self.pool.fetch(EVENTS.event_list, job_id, after, limit)
        return [JobEvent.from_record(r) for r in rows]

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
        schedule_id: int | None = None,
        workflow_id: int | None = None,
    ) -> list[Job]:
        """Newest first; ``before_id`` is the keyset cursor. ``workflow_id``: that workflow's steps."""
        records = await self.reads.fetch(
            JOBS.job_list, state, queue, task, before_id, limit, schedule_id, workflow_id
        )
        return [Job.from_record(r) for r in records]

    async def search_jobs(
        self,
        *,
        args: Mapping[str, Any] | None = None,
        error: str | None = None,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
        window: int = SEARCH_WINDOW,
        timeout_s: float = SEARCH_TIMEOUT_S,
    ) -> JobSearch:
        """Jobs newest first whose args contain ``args`` (JSON containment: ``{"customer_id": 42}``)
        and whose attempts' errors name ``error`` in their type or message (case-insensitive),
        filtered as :meth:`list_jobs` is. A bounded read whatever the table's size: at most
        ``window`` ids below ``before_id`` (the newest ids without it), by the primary key, under a
        ``statement_timeout`` of ``timeout_s`` (asyncpg.QueryCanceledError past it). The page's
        ``next_cursor`` goes on below the last job found, or below the window searched."""
        pattern = None if error is None else "%" + _like_escaped(error) + "%"
        async with self.reads.acquire() as conn, conn.transaction():
            await conn.execute(JOBS.job_search_timeout, round(timeout_s * 1000))
            top = before_id - 1 if before_id is not None else await conn.fetchval(JOBS.job_max_id)
            bottom = max(1, top - window + 1)
            records = await conn.fetch(
                JOBS.job_search,
                bottom,
                top,
                state,
                queue,
                task,
                None if args is None else dict(args),
                pattern,
                limit,
            )
        items = [Job.from_record(r) for r in records]
        if len(items) == limit:
            cursor: int | None = items[-1].id
        else:
            cursor = bottom if bottom > 1 else None
        return JobSearch(items=items, searched_from=bottom, searched_to=max(top, 0), next_cursor=cursor)

    async def cancel(self, job_id: int) -> Job:
        """Cancel a waiting or queued job now, or ask the process running it to stop it. A
        workflow's step cancelled so cancels what depends on it (or, under ``on_failure=
        "continue"``, lets it run)."""

        async def once() -> Job:
            async with self.pool.acquire() as conn, conn.transaction():
                workflow_id = await conn.fetchval(WORKFLOWS.workflow_of_job, job_id)
                if workflow_id is not None:  # its steps first, in id order, as the step-ended
                    await conn.execute(WORKFLOWS.workflow_lock_steps, workflow_id)  # trigger does
                record = await conn.fetchrow(JOBS.job_cancel, job_id)
                if record is None:
                    raise await self._not_allowed(conn, job_id, "cancel", "it has finished")
                job = Job.from_record(record)
                if job.state == JobState.RUNNING:
                    await conn.execute(JOBS.notify_cancel, job_id)
            return job

        return await retry_moved(once)  # it may wait on the job's end: see skiplock.db.moved

    async def retry(self, job_id: int) -> Job:
        """Put a failed or cancelled job back in its queue. Never a workflow's step
        (:class:`InvalidStateError`): :meth:`retry_workflow` runs it again with what depends on it."""

        async def once() -> Job:
            async with self.pool.acquire() as conn, conn.transaction():
                try:
                    record = await conn.fetchrow(JOBS.job_retry, job_id)
                except asyncpg.UniqueViolationError as exc:
                    raise ConflictError(
                        f"job {job_id} cannot be retried: another live job holds its unique_key"
                    ) from exc
                if record is None:
                    why = "only failed or cancelled jobs can be"
                    raise await self._not_allowed(conn, job_id, "retry", why)
                job = Job.from_record(record)
                await conn.execute(JOBS.notify_queued, [job.queue])
            return job

        return await retry_moved(once)  # a retry moves the row back to jobs_live

    async def bulk(
        self, action: BulkAction, *, ids: Sequence[int] | None = None, where: JobFilter | None = None
    ) -> BulkStarted:
        """Retry, cancel or delete the jobs ``ids`` names, or the newest 100,000 ``where`` matches,
        by a job of its own (``bulk_jobs``, enqueued in this transaction with the jobs counted), a
        batch a transaction, guarded by state: a job that changed meanwhile is skipped and counted.
        Delete takes finished jobs only (a workflow's steps once their workflow ended). ConflictError
        when no live worker serves the bulk job's queue or it is paused: it would never run."""
        if (ids is None) == (where is None):
            message = "give ids or filter, one of them"
            raise InvalidArgumentsError(message, errors=[{"field": "ids", "message": message}])
        async with self.pool.acquire() as conn, conn.transaction():
            if ids is not None:
                unique = sorted(set(ids), reverse=True)
                asked = await bulk_actions.asked_at(conn)
                plan = BulkPlan(action=action, ids=unique, matched=len(unique), asked_at=asked)
            else:
                assert where is not None
                matched, top, bottom = await bulk_actions.match(conn, where)
                asked = await bulk_actions.asked_at(conn)
                plan = BulkPlan(
                    action=action, filter=where, top=top, bottom=bottom, matched=matched, asked_at=asked
                )
            request = EnqueueRequest(bulk_actions.BULK_TASK, plan)
            resolved = self._resolve(request, internal=True)
            await bulk_actions.check_runnable(conn, resolved.queue, await self.workers.served_queues())
            job = await self._insert(conn, request, resolved, wake_later=False)
        return BulkStarted(job_id=job.id, action=action, matched=plan.matched)

    async def count_matching(self, where: JobFilter) -> int:
        """How many jobs :meth:`bulk` would take for ``where`` now (at most 100,000)."""
        async with self.pool.acquire() as conn, conn.transaction():
            matched, _, _ = await bulk_actions.match(conn, where)
        return matched

    async def set_limits(self, queue: str, change: Mapping[str, Any]) -> QueueInfo:
        """Change ``queue``'s limits for every process (within a second): the keys of ``change``
        among ``concurrency``, ``global_concurrency``, ``rate_limit`` (a :class:`Rate`),
        ``key_concurrency`` and ``key_rate_limit`` (a :class:`Rate`), each value None to clear it;
        the others stay as they are."""
        rate, key_rate = change.get("rate_limit"), change.get("key_rate_limit")
        async with self.pool.acquire() as conn:
            await conn.execute(
                QUEUES.queue_set_limits,
                queue,
                change.get("concurrency"),
                change.get("global_concurrency"),
                None if rate is None else rate.limit,
                None if rate is None else rate.period_s,
                "concurrency" in change,
                "global_concurrency" in change,
                "rate_limit" in change,
                change.get("key_concurrency"),
                None if key_rate is None else key_rate.limit,
                None if key_rate is None else key_rate.period_s,
                "key_concurrency" in change,
                "key_rate_limit" in change,
            )
        return next(q for q in await self.queues() if q.name == queue)

    async def set_paused(self, queue: str, paused: bool) -> QueueInfo:
        """Pause or resume a queue for every process; a resume wakes its workers."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(QUEUES.queue_set_paused, queue, paused)
            if not paused:
                await conn.execute(JOBS.notify_queued, [queue])
        return next(q for q in await self.queues() if q.name == queue)

    async def queues(self, max_age_s: float = 0) -> list[QueueInfo]:
        """Every queue's counts. ``max_age_s`` > 0 may answer from a read at most that old: counting
        a large jobs table is a scan, and a dashboard refreshing every second should not repeat it."""
        now = time.monotonic()
        if self._overview is not None and now - self._overview[0] <= max_age_s:
            return self._overview[1]
        # An answer allowed to be old may come from the replica; the exact one (after a change of
        # limits or a pause) is the primary's.
        records = await (self.reads if max_age_s > 0 else self.pool).fetch(QUEUES.queue_overview)
        queues = [_queue_info(r) for r in records]
        self._overview = (now, queues)
        return queues

    async def failures(self, ids_per_group: int = 20, window: int = FAILURES_WINDOW) -> list[FailureGroup]:
        """The newest ``window`` failed jobs grouped by task and error type, biggest groups first
        (at most 100): a bounded read however many jobs failed."""
        records = await self.reads.fetch(JOBS.job_failures, ids_per_group, window)
        return [FailureGroup.model_validate(dict(r)) for r in records]

    # --- workflows -------------------------------------------------------------------------------

    def _resolve_step(self, step: Step) -> ResolvedJob:
        request = EnqueueRequest(
            step.task,
            step.args,
            queue=step.queue,
            priority=step.priority,
            max_attempts=step.max_attempts,
            timeout_s=step.timeout_s,
        )
        return self._resolve(request)

    async def start(self, workflow: Workflow, *, conn: AnyConnection | None = None) -> WorkflowInfo:
        """Check every step (names, dependencies, cycles, each task's args: the first problem raises
        :class:`WorkflowInvalid` naming the step, and nothing is written), then write the workflow
        with its steps; in ``conn``'s transaction when given. Steps without dependencies are queued
        at once, the others wait for theirs."""
        ordered = workflow.ordered()
        resolved = workflow_store.resolve_steps(ordered, self._resolve_step)
        origin = _origin()
        if conn is None:
            async with self.pool.acquire() as own, own.transaction():
                row, _ = await workflow_store.insert(own, workflow, ordered, resolved, origin)
                return await workflow_store.get(own, row["id"])
        async with conn.transaction():
            row, _ = await workflow_store.insert(conn, workflow, ordered, resolved, origin)
            return await workflow_store.get(conn, row["id"])

    async def workflow(self, workflow_id: int) -> WorkflowInfo:
        """A workflow with its steps (:class:`WorkflowNotFound` if there is none)."""
        return await workflow_store.get(self.pool, workflow_id)

    async def list_workflows(
        self, *, state: str | None = None, before_id: int | None = None, limit: int = 50
    ) -> list[WorkflowInfo]:
        """Newest first, without their steps; ``before_id`` is the keyset cursor."""
        return await workflow_store.list_workflows(self.reads, state=state, before_id=before_id, limit=limit)

    async def cancel_workflow(self, workflow_id: int) -> WorkflowInfo:
        """Cancel every step not yet finished (running ones as a job's cancel)."""
        await workflow_store.cancel(self.pool, workflow_id)
        return await self.workflow(workflow_id)

    async def retry_workflow(self, workflow_id: int) -> WorkflowInfo:
        """Run the failed and cancelled steps again, and everything downstream of them."""
        await workflow_store.retry(self.pool, workflow_id)
        return await self.workflow(workflow_id)

    async def workflow_result(self, workflow_id: int) -> dict[str, Any]:
        """The results of the steps nothing depends on, by name."""
        return await workflow_store.leaves(self.pool, workflow_id)

    async def wait_for_workflow(self, workflow_id: int, timeout_s: float | None = 30) -> dict[str, Any]:
        """The workflow's result (its last steps' results by name, as :meth:`workflow_result`)
        once it has succeeded, waiting up to ``timeout_s`` seconds (None: no limit) on the
        engine's notifications, with no connection held meanwhile. Raises WorkflowFailed (its
        ``state``, the failed step as ``error``, and ``result``) if it failed or was cancelled,
        ResultTimeout (a TimeoutError) if it is not final in time, WorkflowNotFound."""
        waiter = await self._waiter("wait_for_workflow")
        return await waiter.workflow_result(workflow_id, timeout_s)

    async def _not_allowed(self, conn: AnyConnection, job_id: int, action: str, why: str) -> Exception:
        record = await conn.fetchrow(JOBS.job_get, job_id)
        if record is None:
            return JobNotFound(f"no job with id {job_id}")
        job = Job.from_record(record)
        if action == "retry" and job.workflow_id is not None:
            return InvalidStateError(
                f"cannot retry job {job_id} alone: it is step {job.step!r} of workflow {job.workflow_id};"
                f" retry the workflow (POST /workflows/{job.workflow_id}/retry), which runs its failed"
                " and cancelled steps again with what depends on them",
                state=job.state,
                workflow_id=job.workflow_id,
                step=job.step,
            )
        return InvalidStateError(f"cannot {action} job {job_id} in state {job.state}: {why}", state=job.state)


def _queue_info(record: asyncpg.Record) -> QueueInfo:
    row = dict(record)
    rate, period = row.pop("rate_limit"), row.pop("rate_period_s")
    key_rate, key_period = row.pop("key_rate_limit"), row.pop("key_rate_period_s")
    row["limits"] = QueueLimitsInfo(
        concurrency=row.pop("limit_concurrency"),
        global_concurrency=row.pop("global_concurrency"),
        rate_limit=None if rate is None else str(Rate(rate, period)),
        key_concurrency=row.pop("key_concurrency"),
        key_rate_limit=None if key_rate is None else str(Rate(key_rate, key_period)),
    )
    row["waiting"] = _waiting(row)
    return QueueInfo.model_validate(row)


def _waiting(row: dict[str, Any]) -> dict[str, int]:
    """A queue's jobs not started yet by why (its overview's row, whose figures it takes out)."""
    later, unknown = row.pop("later"), row.pop("unknown_due")
    rate_full, global_full = row.pop("rate_full"), row.pop("global_full")
    key_rate, key_concurrency = row.pop("key_rate_waiting"), row.pop("key_concurrency_waiting")
    counts = row["counts"]
    due = counts.get("queued", 0) - later
    waiting = {"dependencies": counts.get("waiting", 0), "run_at": later}
    if row["paused"]:
        waiting["paused"] = due
    else:
        waiting["unknown_task"] = unknown
        rest = due - unknown
        if rate_full:
            waiting["rate_limit"] = rest
        elif global_full:
            waiting["global_concurrency"] = rest
        else:
            waiting["rate_limit"] = min(key_rate or 0, rest)
            waiting["key_concurrency"] = min(key_concurrency or 0, rest - waiting["rate_limit"])
    return {reason: n for reason, n in waiting.items() if n > 0}
