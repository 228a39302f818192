"""Schedules as rows: validated, stored, listed with their next fire times, triggered by hand."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
from pydantic import Field

from skiplock.db.pool import encode_json
from skiplock.errors import ConflictError, InvalidArgumentsError
from skiplock.errors import ScheduleNotFound as ScheduleNotFound
from skiplock.queue._statements import JOBS, SCHEDULES
from skiplock.queue.cron import Cron, CronError
from skiplock.queue.models import Job
from skiplock.queue.tasks import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, MAX_PRIORITY, TaskRegistry
from skiplock.queue.tasks import ScheduleSpec as ScheduleSpec

UPCOMING = 5


class Schedule(ScheduleSpec):
    """A stored schedule, with its next fire times."""

    id: int
    source: Literal["api", "code"]
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: int | None
    created_at: datetime
    updated_at: datetime
    upcoming: list[datetime] = Field(default_factory=list, description="The next five fire times (UTC).")

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Schedule:
        schedule = cls.model_validate({k: v for k, v in dict(record).items() if k != "db_now"})
        try:
            schedule.upcoming = Cron(schedule.cron, schedule.timezone).upcoming(datetime.now(UTC), UPCOMING)
        except CronError:
            schedule.upcoming = []
        return schedule


class Schedules:
    """Create, read, change, delete and trigger schedules (the API's and code's way in)."""

    def __init__(self, pool: asyncpg.Pool, registry: TaskRegistry) -> None:
        self.pool = pool
        self.registry = registry

    def validate(self, spec: ScheduleSpec) -> tuple[Cron, dict[str, Any]]:
        """The parsed cron and the args as stored; InvalidArgumentsError naming the field otherwise."""
        problems: list[dict[str, str]] = []
        cron: Cron | None = None
        try:
            cron = Cron(spec.cron, spec.timezone)
        except CronError as exc:
            field = "timezone" if "timezone" in str(exc) else "cron"
            problems.append({"field": field, "message": str(exc)})
        if spec.priority is not None and not -MAX_PRIORITY <= spec.priority <= MAX_PRIORITY:
            problems.append(
                {"field": "priority", "message": f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}"}
            )
        args: dict[str, Any] = spec.args
        if spec.task not in self.registry:
            known = ", ".join(sorted(t.name for t in self.registry))
            problems.append({"field": "task", "message": f"unknown task {spec.task!r}; known tasks: {known}"})
        else:
            task = self.registry.get(spec.task)
            try:
                task.check_public()
            except InvalidArgumentsError as exc:
                problems += exc.extra["errors"]
            try:
                args = task.dump_args(task.validate_args(spec.args))
            except InvalidArgumentsError as exc:
                problems += [
                    {"field": f"args.{e['field']}", "message": e["message"]} for e in exc.extra["errors"]
                ]
        if problems or cron is None:
            summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            raise InvalidArgumentsError(f"invalid schedule: {summary}", errors=problems)
        return cron, args

    @staticmethod
    def preview(cron: str, timezone: str = "UTC", count: int = UPCOMING) -> list[datetime]:
        """The next ``count`` fire times (UTC) of ``cron`` in ``timezone``, as a schedule would
        fire; InvalidArgumentsError naming the field for a bad cron or timezone."""
        try:
            return Cron(cron, timezone).upcoming(datetime.now(UTC), count)
        except CronError as exc:
            field = "timezone" if "timezone" in str(exc) else "cron"
            problem = {"field": field, "message": str(exc)}
            raise InvalidArgumentsError(f"{field}: {exc}", errors=[problem]) from exc

    def _stored(self, spec: ScheduleSpec) -> tuple[Any, ...]:
        """The validated values as the statements take them (see schedules.sql); next run from now."""
        cron, args = self.validate(spec)
        return (
            spec.cron,
            spec.timezone,
            spec.task,
            args,
            spec.queue,
            spec.priority,
            spec.enabled,
            spec.misfire,
            cron.next_after(datetime.now(UTC)),
        )

    async def create(self, spec: ScheduleSpec) -> Schedule:
        try:
            record = await self.pool.fetchrow(SCHEDULES.schedule_insert, spec.name, *self._stored(spec))
        except asyncpg.UniqueViolationError as exc:
            raise ConflictError(f"a schedule named {spec.name!r} exists already") from exc
        assert record is not None
        return Schedule.from_record(record)

    async def declare(self, spec: ScheduleSpec) -> Schedule | None:
        """Create or update a schedule declared in code; None if an API-made one has the name."""
        record = await self.pool.fetchrow(SCHEDULES.schedule_upsert_declared, spec.name, *self._stored(spec))
        return None if record is None else Schedule.from_record(record)

    async def get(self, schedule_id: int) -> Schedule:
        record = await self.pool.fetchrow(SCHEDULES.schedule_get, schedule_id)
        if record is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id}")
        return Schedule.from_record(record)

    async def all(self) -> list[Schedule]:
        return [Schedule.from_record(r) for r in await self.pool.fetch(SCHEDULES.schedule_list)]

    async def update(self, schedule_id: int, changes: dict[str, Any]) -> Schedule:
        """Apply ``changes``; the next run is recomputed from now."""
        current = await self.get(schedule_id)
        spec = ScheduleSpec.model_validate(
            {**current.model_dump(include=set(ScheduleSpec.model_fields)), **changes}
        )
        record = await self.pool.fetchrow(SCHEDULES.schedule_update, schedule_id, *self._stored(spec))
        if record is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id}")
        return Schedule.from_record(record)

    async def delete(self, schedule_id: int) -> None:
        if await self.pool.fetchval(SCHEDULES.schedule_delete, schedule_id) is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id}")

    async def trigger(self, schedule_id: int) -> Job:
        """Enqueue the schedule's job now (it counts in the schedule's history)."""
        schedule = await self.get(schedule_id)
        row = scheduled_job_row(self.registry, schedule.model_dump(), datetime.now(UTC))
        created = await self.pool.fetch(SCHEDULES.job_insert_scheduled_many, *([v] for v in row))
        if not created:
            raise ConflictError("triggered twice in the same microsecond; try again")
        record = await self.pool.fetchrow(JOBS.job_get, created[0]["id"])
        assert record is not None
        return Job.from_record(record)


def scheduled_job_row(
    registry: TaskRegistry, schedule: Mapping[str, Any] | asyncpg.Record, tick: datetime
) -> tuple[Any, ...]:
    """One tick's job, as a row for job_insert_scheduled_many: the schedule's values, else the task's."""
    task = registry.get(schedule["task"]) if schedule["task"] in registry else None
    priority = schedule["priority"]
    return (
        schedule["queue"] or (task.queue if task else DEFAULT_QUEUE),
        schedule["task"],
        encode_json(schedule["args"]),
        priority if priority is not None else (task.priority if task else 0),
        task.max_attempts if task else DEFAULT_MAX_ATTEMPTS,
        task.timeout_s if task else None,
        schedule["id"],
        tick,
    )
