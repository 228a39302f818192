"""The kit a test of your tasks gets: a client on a real database, assertions on what is enqueued,
and ``drain()``, which runs the real engine on that database until nothing is left to run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from skiplock.db.sqlfile import Statement, load_statements
from skiplock.queue import Client, Engine, Job, JobState, Task, TaskRegistry, WorkflowInfo
from skiplock.queue.handles import default_client_or_none, set_default_client
from skiplock.settings import Settings


@dataclass(frozen=True, slots=True)
class KitStatements:
    kit_now: Statement
    kit_enqueued: Statement
    kit_make_due: Statement
    kit_next_tick: Statement
    kit_live_queues: Statement
    kit_pending: Statement
    kit_touched: Statement


SQL = load_statements(KitStatements, "skiplock.testing.sql", "kit.sql")

#: Schedule ticks one drain fires at most (a per-minute cron drained a year ahead is a mistake).
MAX_TICKS = 10_000

TaskRef = str | Task[Any]


def _name(task: TaskRef) -> str:
    return task if isinstance(task, str) else task.name


def _as_json(args: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    return args.model_dump(mode="json") if isinstance(args, BaseModel) else dict(args)


def _matches(job: Job, args: dict[str, Any] | None) -> bool:
    return args is None or all(key in job.args and job.args[key] == value for key, value in args.items())


@dataclass(frozen=True)
class Drained:
    """What one :meth:`Kit.drain` ran: every job it made, started or ended (children and workflow
    steps included), as they are once it returned, oldest first, and the workflows of those jobs."""

    jobs: list[Job]
    workflows: list[WorkflowInfo] = field(default_factory=list)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def of(self, task: TaskRef) -> list[Job]:
        """The jobs of ``task`` among them."""
        name = _name(task)
        return [job for job in self.jobs if job.task == name]

    def in_state(self, state: JobState | str) -> list[Job]:
        return [job for job in self.jobs if job.state == state]

    @property
    def succeeded(self) -> list[Job]:
        return self.in_state(JobState.SUCCEEDED)

    @property
    def failed(self) -> list[Job]:
        return self.in_state(JobState.FAILED)


class Kit:
    """A test's skiplock: ``client`` on the test's own migrated database (``dsn``), checking args
    against ``registry`` (and the client ``task.enqueue(...)`` uses), :meth:`assert_enqueued` and
    :meth:`drain`."""

    def __init__(self, client: Client, dsn: str, registry: TaskRegistry) -> None:
        self.client = client
        self.dsn = dsn
        self.registry = registry

    async def enqueued(
        self, task: TaskRef | None = None, args: Mapping[str, Any] | BaseModel | None = None
    ) -> list[Job]:
        """Jobs not started yet (queued, due or not, or a workflow step waiting on its dependencies),
        oldest first: of ``task``, and with ``args`` (each key given equal to the job's, as stored:
        JSON; a model is compared field by field, defaults included)."""
        wanted = None if args is None else _as_json(args)
        records = await self.client.pool.fetch(SQL.kit_enqueued, None if task is None else _name(task))
        return [job for job in map(Job.from_record, records) if _matches(job, wanted)]

    async def assert_enqueued(
        self,
        task: TaskRef,
        args: Mapping[str, Any] | BaseModel | None = None,
        *,
        count: int | None = None,
        queue: str | None = None,
    ) -> list[Job]:
        """Fail unless a job of ``task`` (with ``args``, in ``queue``) is enqueued and not started
        yet, or exactly ``count`` of them; returns them. The message lists what is enqueued."""
        found = [job for job in await self.enqueued(task, args) if queue is None or job.queue == queue]
        if (count is None and found) or (count is not None and len(found) == count):
            return found
        wanted = "a job" if count is None else f"{count} job(s)"
        raise AssertionError(
            f"expected {wanted} of {_name(task)!r}{_described(args, queue)} enqueued, found {len(found)};"
            f" enqueued: {await self._listing()}"
        )

    async def assert_not_enqueued(
        self, task: TaskRef, args: Mapping[str, Any] | BaseModel | None = None, *, queue: str | None = None
    ) -> None:
        """Fail if a job of ``task`` (with ``args``, in ``queue``) is enqueued and not started yet."""
        found = [job for job in await self.enqueued(task, args) if queue is None or job.queue == queue]
        if found:
            raise AssertionError(
                f"expected no job of {_name(task)!r}{_described(args, queue)} enqueued, found"
                f" {[(job.id, job.args) for job in found]}"
            )

    async def _listing(self) -> list[tuple[int, str, dict[str, Any]]] | str:
        jobs = await self.enqueued()
        return [(job.id, job.task, job.args) for job in jobs] if jobs else "nothing"

    async def drain(
        self, until: datetime | timedelta | None = None, *, timeout_s: float = 30, concurrency: int = 10
    ) -> Drained:
        """Run everything due on the real engine, in this process, until no job is running and none
        is due (a job's children and a workflow's later steps included, as they become due), then
        stop it; returns what ran. ``until`` (a moment, or a time from now) is the time control:
        schedules fire every tick up to it, as the clock passing would make them, and jobs due by
        then (delayed, scheduled, a retry's backoff, a snooze) are made due now (their ``run_at``
        moved: the database's clock cannot be). A job of a task not in the registry, or left in a
        paused queue, is not waited for. ``TimeoutError`` after ``timeout_s`` naming what is left."""
        pool = self.client.pool
        started = await pool.fetchval(SQL.kit_now)
        horizon = started + until if isinstance(until, timedelta) else until
        queues = {record["queue"] for record in await pool.fetch(SQL.kit_live_queues)}
        settings = Settings(
            database_url=self.dsn,
            queues=sorted(queues | self.registry.queues() | {"default"}),
            concurrency=concurrency,
            scheduler=False,  # the kit fires the ticks, at the moments they are for
            auto_migrate=False,
            poll_interval_s=0.05,
            rescue_interval_s=0.5,
            shutdown_grace_s=5.0,
            pool_min_size=1,
            pool_max_size=5,
            task_modules=[],
            rate_limit="off",
        )
        try:
            async with Engine(settings, self.registry, self.dsn) as engine:
                await self._fire_ticks(engine, horizon or started)
                await self._run_until_idle(horizon, timeout_s)
        finally:
            if default_client_or_none() is None:  # the engine's client, gone with it: the kit's again
                set_default_client(self.client)
        jobs = [Job.from_record(r) for r in await pool.fetch(SQL.kit_touched, started)]
        workflow_ids = sorted({job.workflow_id for job in jobs if job.workflow_id is not None})
        return Drained(jobs, [await self.client.workflow(w) for w in workflow_ids])

    async def _fire_ticks(self, engine: Engine, horizon: datetime) -> None:
        for _ in range(MAX_TICKS):
            tick = await self.client.pool.fetchval(SQL.kit_next_tick, horizon)
            if tick is None:
                return
            await engine.fire_schedules(tick)
        raise ValueError(f"more than {MAX_TICKS} schedule ticks before {horizon}: drain to an earlier moment")

    async def _run_until_idle(self, horizon: datetime | None, timeout_s: float) -> None:
        pool = self.client.pool
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if horizon is not None:
                await pool.fetch(SQL.kit_make_due, horizon)
            pending = [r for r in await pool.fetch(SQL.kit_pending) if r["task"] in self.registry]
            if not pending:
                return
            if loop.time() > deadline:
                left = {r["task"]: {"running": r["running"], "due": r["due"]} for r in pending}
                raise TimeoutError(f"drain: jobs still to run after {timeout_s} s: {left}")
            await asyncio.sleep(0.02)


def _described(args: Mapping[str, Any] | BaseModel | None, queue: str | None) -> str:
    said = "" if args is None else f" with args {_as_json(args)}"
    return said + ("" if queue is None else f" in queue {queue!r}")
