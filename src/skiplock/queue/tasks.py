"""The task registry: ``@task(name, args=Model, …)`` on an async (or plain) function."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from skiplock.errors import ConfigError, InvalidArgumentsError, UnknownTaskError
from skiplock.queue.backoff import Backoff
from skiplock.queue.cron import Cron, CronError
from skiplock.queue.handles import JobHandle, default_client
from skiplock.queue.workflows import Step
from skiplock.queue_names import QUEUE_NAME, check_queue_name
from skiplock.rates import Rate

if TYPE_CHECKING:
    from datetime import datetime

    from skiplock.db.pool import AnyConnection
    from skiplock.queue.client import Client
    from skiplock.queue.context import Context

ArgsT = TypeVar("ArgsT", bound=BaseModel)
TaskFn = Callable[["Context", Any], Any]

TaskExecutor = Literal["thread", "process"]

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
MAX_PRIORITY = 100  # priorities run from -MAX_PRIORITY to MAX_PRIORITY, higher first
MAX_KEY_LENGTH = 200  # a concurrency key value's characters
MAX_KEY_CONCURRENCY = 100_000  # the schema's bound (migration 0019)

#: A job's concurrency key: the name of one of its args' fields, or a function of its args.
ConcurrencyKey = str | Callable[[Any], object]


class ScheduleSpec(BaseModel):
    """What a schedule is made of; everything but ``name`` can change later.

    Kept here, beside the tasks that declare schedules, so the registry imports nothing from
    ``schedules`` (which imports the registry); ``skiplock.queue.schedules`` re-exports it.
    """

    name: str = Field(min_length=1, max_length=200)
    cron: str = Field(min_length=1, max_length=200, examples=["*/5 * * * *", "@daily", "*/10 * * * * *"])
    timezone: str = Field(default="UTC", max_length=100, examples=["Europe/Berlin"])
    task: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(default=None, pattern=QUEUE_NAME)
    priority: int | None = None
    enabled: bool = True
    misfire: Literal["skip", "catch_up"] = "skip"


@dataclass(frozen=True, slots=True)
class Task(Generic[ArgsT]):
    """A registered task: the function and the defaults its jobs start with."""

    name: str
    fn: TaskFn
    args: type[ArgsT]
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float | None = None
    backoff: Backoff = field(default_factory=Backoff)
    description: str = ""
    schedules: tuple[str, ...] = ()  # cron expressions (UTC) declared with the task
    #: The model of what a workflow step's dependencies returned: ``ctx.upstream``'s values as
    #: instances of it (None: as stored, JSON).
    upstream: type[BaseModel] | None = None
    #: Where its jobs run: None, an ``async def`` on the event loop and a plain ``def`` on the
    #: engine's threads; "process": in the task process pool (see _processes.py).
    executor: TaskExecutor | None = None
    #: Its jobs' key for per-key limits: an args field's name, or a function of the args (None:
    #: a job without a key).
    concurrency_key: ConcurrencyKey | None = None
    #: Per-key limits it declares for its queue (written at a worker's start where none is set).
    key_concurrency: int | None = None
    key_rate: Rate | None = None
    #: A built-in enqueued only by its own method (``bulk_jobs`` by :meth:`Client.bulk`): refused by
    #: every other enqueue (POST /jobs, batches, workflows, schedules, ``ctx.enqueue``, the CLI).
    internal: bool = False

    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.fn))

    def validate_args(self, raw: object) -> ArgsT:
        """The args as the task's model, or InvalidArgumentsError naming each bad field."""
        try:
            # The compiled validator itself: model_validate's wrapper costs more than the validation
            # of a small model, and bulk enqueue validates every job.
            validated: ArgsT = self.args.__pydantic_validator__.validate_python(raw)
            return validated
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in err["loc"]) or "args", "message": err["msg"]}
                for err in exc.errors(include_url=False)
            ]
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise InvalidArgumentsError(
                f"invalid args for task {self.name!r}: {summary}", errors=errors
            ) from exc

    def check_public(self) -> None:
        """InvalidArgumentsError (naming the field ``task``) for an internal task."""
        if self.internal:
            message = f"task {self.name!r} is internal: it is enqueued only by its own action, not directly"
            raise InvalidArgumentsError(message, errors=[{"field": "task", "message": message}])

    def key_of(self, args: BaseModel, dumped: dict[str, Any]) -> str | None:
        """The job's concurrency key: its field's value (as stored) or the function's, as text; None
        without one. An empty or overlong key is an InvalidArgumentsError."""
        if self.concurrency_key is None:
            return None
        if isinstance(self.concurrency_key, str):
            value = dumped.get(self.concurrency_key)
        else:
            value = self.concurrency_key(args)
        if value is None:
            return None
        key = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
        problem = (
            "is empty"
            if not key
            else f"is longer than {MAX_KEY_LENGTH} characters"
            if len(key) > MAX_KEY_LENGTH
            else None
        )
        if problem is not None:
            message = f"task {self.name!r}: the job's concurrency key {problem}"
            raise InvalidArgumentsError(message, errors=[{"field": "concurrency_key", "message": message}])
        return key

    def declared_schedules(self) -> list[ScheduleSpec]:
        """The task's code-declared schedules: named after the task (``name#2``… for more)."""
        return [
            ScheduleSpec(name=schedule_name(self.name, n), cron=cron, task=self.name)
            for n, cron in enumerate(self.schedules)
        ]

    def dump_args(self, args: BaseModel) -> dict[str, Any]:
        """The args as stored: JSON-ready, defaults filled in."""
        dumped: dict[str, Any] = self.args.__pydantic_serializer__.to_python(args, mode="json")
        return dumped

    def args_schema(self) -> dict[str, Any]:
        return self.args.model_json_schema()

    async def __call__(self, ctx: Context, args: ArgsT) -> Any:
        """Call the function directly (tests, composition)."""
        result = self.fn(ctx, args)
        return await result if inspect.isawaitable(result) else result

    def step(
        self,
        args: ArgsT | dict[str, Any] | None = None,
        *,
        name: str = "",
        after: str | Iterable[str] = (),
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> Step:
        """A workflow step running this task (for ``chain``, ``group``, ``chord``, ``Workflow``):
        Celery's signature. ``name`` defaults to the step's place in the chain or group."""
        return Step(
            name=name,
            task=self.name,
            args=args,
            after=(after,) if isinstance(after, str) else tuple(after),  # one name, or several
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
        )

    async def enqueue(
        self,
        args: ArgsT | dict[str, Any] | None = None,
        *,
        client: Client | None = None,
        conn: AnyConnection | None = None,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay_s: float | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        unique_key: str | None = None,
        expires_in_s: float | None = None,
        expires_at: datetime | None = None,
    ) -> JobHandle:
        """Enqueue a job of this task (in ``conn``'s transaction when given) and return a handle
        to wait on: ``await (await thumbnail.enqueue(args)).result(timeout=30)``. The client is
        ``client``, else the process's (see :func:`skiplock.queue.handles.default_client`)."""
        using = client or default_client()
        job = await using.enqueue(
            self.name,
            args,
            conn=conn,
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay_s=delay_s,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            unique_key=unique_key,
            expires_in_s=expires_in_s,
            expires_at=expires_at,
        )
        return JobHandle(job, using)


class TaskRegistry:
    """Tasks by name."""

    def __init__(self, tasks: Iterable[Task[Any]] = ()) -> None:
        self._tasks: dict[str, Task[Any]] = {}
        for item in tasks:
            self.add(item)

    def add(self, item: Task[Any]) -> None:
        existing = self._tasks.get(item.name)
        if existing is not None and existing.fn is not item.fn:
            raise ValueError(f"task {item.name!r} is registered twice")
        self._tasks[item.name] = item

    def get(self, name: str) -> Task[Any]:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTaskError(
                f"unknown task {name!r}; known tasks: {known}", known=sorted(self._tasks)
            ) from None

    def queues(self) -> set[str]:
        return {item.queue for item in self._tasks.values()}

    def __iter__(self) -> Iterator[Task[Any]]:
        return iter(sorted(self._tasks.values(), key=lambda t: t.name))

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)


def schedule_name(task_name: str, index: int) -> str:
    """The name of a task's ``index``-th schedule declared in code: the task's, then ``name#2``…"""
    return task_name if index == 0 else f"{task_name}#{index + 1}"


def _check_declaration(name: str, queue: str, schedules: tuple[str, ...]) -> None:
    """A start-up error naming what is wrong: a queue no worker could serve, a cron that cannot fire."""
    try:
        check_queue_name(queue)
    except ValueError as exc:
        raise ConfigError(f"task {name!r}: {exc}") from exc
    for index, cron in enumerate(schedules):
        try:
            Cron(cron, "UTC")
        except CronError as exc:
            raise ConfigError(
                f"task {name!r}: schedule {schedule_name(name, index)!r} ({cron!r}): {exc}"
            ) from exc


def _check_key_limits(
    name: str,
    args: type[BaseModel],
    concurrency_key: ConcurrencyKey | None,
    key_concurrency: int | None,
    key_rate_limit: str | None,
) -> Rate | None:
    """The per-key rate parsed; a ValueError naming what is wrong with the key's declaration."""
    if isinstance(concurrency_key, str) and concurrency_key not in args.model_fields:
        raise ValueError(f"task {name!r}: concurrency_key {concurrency_key!r} is not a field of its args")
    if concurrency_key is not None and not isinstance(concurrency_key, str) and not callable(concurrency_key):
        raise ValueError(f"task {name!r}: concurrency_key is an args field's name or a function of the args")
    if concurrency_key is None and (key_concurrency is not None or key_rate_limit is not None):
        raise ValueError(f"task {name!r}: key_concurrency and key_rate_limit need a concurrency_key")
    if key_concurrency is not None and not (
        isinstance(key_concurrency, int) and 1 <= key_concurrency <= MAX_KEY_CONCURRENCY
    ):
        raise ValueError(f"task {name!r}: key_concurrency must be a whole number, 1 to {MAX_KEY_CONCURRENCY}")
    try:
        return None if key_rate_limit is None else Rate.parse(key_rate_limit)
    except ValueError as exc:
        raise ValueError(f"task {name!r}: key_rate_limit: {exc}") from exc


#: Tasks declared with ``@task`` anywhere in the process (built-ins and SKIPLOCK_TASK_MODULES).
registered = TaskRegistry()


def task(
    name: str,
    *,
    args: type[ArgsT],
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout_s: float | None = None,
    backoff: Backoff | None = None,
    schedule: str | None = None,
    schedules: Iterable[str] = (),
    upstream: type[BaseModel] | None = None,
    executor: TaskExecutor | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    key_concurrency: int | None = None,
    key_rate_limit: str | None = None,
    internal: bool = False,
) -> Callable[[TaskFn], Task[ArgsT]]:
    """Declare a task. The function takes ``(ctx, args)``; a plain ``def`` runs in a thread.
    ``upstream``: as a workflow step, its dependencies' results are read as this model.
    ``executor="process"``: each job runs in the task process pool (a child process, killed at
    ``timeout_s`` or on cancel); ``"thread"`` states the default of a plain ``def``.
    ``concurrency_key``: an args field's name, or a function of the args, whose value (computed at
    enqueue, kept on the job) is the job's key; ``key_concurrency`` (jobs running at once) and
    ``key_rate_limit`` (``"10/minute"``) per key value are limits of the task's queue, across every
    process, written at a worker's start unless the queue has them set already (PATCH).
    ``internal``: only the library's own code enqueues it (see :attr:`Task.internal`)."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if executor not in (None, "thread", "process"):
        raise ValueError("executor must be 'thread' or 'process'")
    declared_crons = ((schedule,) if schedule else ()) + tuple(schedules)
    _check_declaration(name, queue, declared_crons)
    key_rate = _check_key_limits(name, args, concurrency_key, key_concurrency, key_rate_limit)

    def decorate(fn: TaskFn) -> Task[ArgsT]:
        if executor == "thread" and inspect.iscoroutinefunction(fn):
            raise ValueError(f"task {name!r}: executor='thread' is for a plain def, not an async def")
        declared = Task(
            name=name,
            fn=fn,
            args=args,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            backoff=backoff or Backoff(),
            description=inspect.getdoc(fn) or "",
            schedules=declared_crons,
            upstream=upstream,
            executor=executor,
            concurrency_key=concurrency_key,
            key_concurrency=key_concurrency,
            key_rate=key_rate,
            internal=internal,
        )
        registered.add(declared)
        return declared

    return decorate
