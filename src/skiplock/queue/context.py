"""What a running task sees: its job, progress reporting, the pool, and follow-up enqueueing."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skiplock.db.storable import storable_json
from skiplock.errors import LeaseLostError
from skiplock.queue._running import StopReason

if TYPE_CHECKING:
    import asyncpg

    from skiplock.fetcher import Fetcher
    from skiplock.queue._running import RunningJob
    from skiplock.queue.client import Client
    from skiplock.queue.models import Job


_LEVELS = frozenset({"debug", "info", "warning", "error"})
_MAX_KEY_CHARS = 200  # of a child's key (ctx.enqueue(key=…))


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int


class Context:
    """Handed to every task as its first argument: its job (``job``), progress and log events,
    enqueueing of follow-up jobs, the shared HTTP session (``http``) and a pool for its own
    statements (``pool``). Nothing else of the engine: a task cannot cancel, retry or pause
    other jobs or queues through it."""

    def __init__(
        self,
        job: JobInfo,
        *,
        client: Client,
        on_event: Callable[[int, str, dict[str, Any]], None],
        http: Fetcher,
        lease: RunningJob | None = None,
    ) -> None:
        self.job = job
        #: Private: a task reaches only its pool and its enqueues through it (see ``pool``).
        self._client = client
        #: The run this context belongs to: what it enqueues is guarded by its lease.
        self._lease = lease
        #: The process's shared outbound HTTP session, with its size, redirect and address limits.
        self.http = http
        self._on_event = on_event
        #: A workflow step's direct dependencies: step name -> result, in the order of its
        #: ``after`` (a dependency that did not succeed, under ``on_failure="continue"``, as an
        #: :class:`~skiplock.queue.workflows.UpstreamFailure`). Empty for a job outside a workflow.
        self.upstream: dict[str, Any] = {}
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._unkeyed = 0  # this run's ctx.enqueue calls without a key so far: the next one's place

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if threading.get_ident() == self._loop_thread:
            self._on_event(self.job.id, kind, data)
        else:  # a plain-def task's thread: hand the event to the loop
            self._loop.call_soon_threadsafe(self._on_event, self.job.id, kind, data)

    @property
    def pool(self) -> asyncpg.Pool:
        """The tasks' pool (``Client.task_pool``), not the engine's: its connections are reset
        between uses, so session state a task leaves (SET, LISTEN, advisory locks) goes with it;
        its statements are bounded by the task statement timeout, not the engine's; and a task
        holding its connections cannot starve the engine's writes."""
        return self._client.task_pool

    def report_progress(
        self,
        fraction: float | None = None,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Record progress without waiting (safe from a plain ``def`` task's thread)."""
        if fraction is None and current is not None and total:
            fraction = current / total
        if fraction is not None and not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError("progress fraction must be between 0 and 1")
        value: dict[str, Any] = {"fraction": fraction, "message": message}
        if current is not None:
            value["current"] = current
        if total is not None:
            value["total"] = total
        self._emit("progress", value)

    async def progress(
        self,
        fraction: float | None = None,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report progress; the latest value is written to the job, throttled."""
        self.report_progress(fraction, message, current=current, total=total)

    def log_nowait(self, message: str, *, level: str = "info", **fields: Any) -> None:
        """Record a log line for the job's event stream without waiting (thread-safe)."""
        if level not in _LEVELS:
            raise ValueError(f"level must be one of {sorted(_LEVELS)}")
        # Plain JSON now, whatever the fields hold (a lone surrogate makes pydantic raise).
        self._emit("log", {"message": message, "level": level, "fields": storable_json(fields)})

    async def log(self, message: str, *, level: str = "info", **fields: Any) -> None:
        """A log line kept with the job and streamed to its subscribers: ``ctx.log("parsed", url=u)``."""
        self.log_nowait(message, level=level, **fields)

    async def enqueue(self, task: str, args: Any = None, *, key: str | None = None, **options: Any) -> Job:
        """Enqueue a follow-up job, this job's child (options as for :meth:`Client.enqueue`). It
        commits only while this run holds its job's lease (running, at its attempt, under this
        process); once the lease is lost this raises :class:`LeaseLostError`, nothing is written,
        and the run is being stopped.

        Made once per parent: the child is known by ``key`` if given, else by this call's place
        among the run's calls without a key (1st, 2nd, …). A later run of this job (a retry, a run
        after a lost lease) that asks for the same child gets the one made before back, with
        ``created`` False, in whatever state it is, instead of a second one."""
        if key is not None and not (isinstance(key, str) and 1 <= len(key) <= _MAX_KEY_CHARS):
            raise ValueError(f"key must be a string of 1 to {_MAX_KEY_CHARS} characters")
        lease = self._lease
        if lease is None:
            return await self._client.enqueue(task, args, **options)
        if key is None:
            self._unkeyed += 1
            child_key = f"call:{self._unkeyed}"
        else:
            child_key = f"key:{key}"
        if not lease.holds_lease():
            raise LeaseLostError(f"job {self.job.id} attempt {self.job.attempt} no longer holds its lease")
        try:
            return await self._client.enqueue_from(
                self.job.id, self.job.attempt, lease.owner, task, args, child_key=child_key, **options
            )
        except LeaseLostError:
            lease.stop(StopReason.LEASE_LOST)
            raise
