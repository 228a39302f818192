"""/schedules: cron rows managed over the API, and "run now"."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, delete, get, patch, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, ConfigDict, Field

from skiplock.api.errors import validation_as_422
from skiplock.api.openapi import NEEDS_KEY, documented
from skiplock.api.plugin import ClientDep
from skiplock.api.schemas import error_responses
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.queue.models import Job
from skiplock.queue.schedules import Schedule, Schedules, ScheduleSpec
from skiplock.queue_names import QUEUE_NAME

_BAD_SCHEDULE = "A bad cron, timezone, task, args or field (`extra.errors` names it), or a bad id."
_NO_SCHEDULE = "No schedule has this id."
SCHEDULE_EXAMPLES: dict[str, Any] = {
    "nightly": {
        "name": "nightly-report",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "task": "sleep",
        "args": {"seconds": 1},
    }
}

ScheduleId = Annotated[str, Parameter(pattern=r"^[1-9][0-9]{0,17}$", description="The schedule's id.")]


class ScheduleCreate(ScheduleSpec):
    model_config = ConfigDict(extra="forbid")


class ScheduleChange(BaseModel):
    """Fields to change; a field left out stays, and the next run is recomputed. Only ``queue``
    and ``priority`` may be null (back to the task's)."""

    model_config = ConfigDict(extra="forbid")

    # Left out, a field is None and never validated (a default is not): null sent is refused, a 422.
    cron: Annotated[str, Field(default=None, min_length=1, max_length=200)]
    timezone: Annotated[str, Field(default=None, max_length=100)]
    task: Annotated[str, Field(default=None, min_length=1, max_length=200)]
    args: Annotated[dict[str, Any], Field(default=None)]
    queue: str | None = Field(default=None, pattern=QUEUE_NAME)
    priority: int | None = None
    enabled: Annotated[bool, Field(default=None)]
    misfire: Annotated[Literal["skip", "catch_up"], Field(default=None)]


class CronPreview(BaseModel):
    """A cron's next fire times, as a schedule of it would fire."""

    cron: str
    timezone: str
    upcoming: list[datetime] = Field(description="The next fire times (UTC).")


class ScheduleController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/schedules"
    tags = ["schedules"]
    security = NEEDS_KEY
    exception_handlers = {ValidationException: validation_as_422}

    @get("/", operation_id="ListSchedules", summary="List schedules", responses=error_responses())
    async def list_schedules(self, client: ClientDep) -> list[Schedule]:
        """Every schedule, by name, with its next five fire times."""
        return await client.schedules.all()

    @post(
        "/",
        operation_id="CreateSchedule",
        summary="Create a schedule",
        opt=needs(Scope.SCHEDULES_WRITE),
        responses=error_responses(body=True, e409="A schedule has this name.", e422=_BAD_SCHEDULE),
        operation_class=documented(examples=SCHEDULE_EXAMPLES),
    )
    async def create(self, data: JSONBody[ScheduleCreate], client: ClientDep) -> Schedule:
        """201 with the schedule; 422 naming the field for a bad cron, timezone, task or args;
        409 when the name is taken."""
        return await client.schedules.create(data)

    @get(
        "/preview",
        operation_id="PreviewSchedule",
        summary="Preview a cron's fire times",
        responses=error_responses(database=False, e422="A bad cron or timezone (`extra.errors` names it)."),
        description="The next `count` fire times of `cron` in `timezone`, computed as the scheduler "
        "does (croniter; daylight-saving rules included); nothing is stored. What the dashboard's "
        "schedule form shows as you type.",
    )
    async def preview(
        self,
        cron: Annotated[str, Parameter(min_length=1, max_length=200)],
        timezone: Annotated[str, Parameter(min_length=1, max_length=100)] = "UTC",
        count: Annotated[int, Parameter(ge=1, le=20)] = 5,
    ) -> CronPreview:
        """The next fire times of a cron in a timezone; 422 naming the field for a bad one."""
        upcoming = Schedules.preview(cron, timezone, count)
        return CronPreview(cron=cron, timezone=timezone, upcoming=upcoming)

    @get(
        "/{schedule_id:str}",
        operation_id="GetSchedule",
        summary="Get a schedule",
        responses=error_responses(e404=_NO_SCHEDULE, e422="A bad id."),
    )
    async def get_schedule(self, schedule_id: ScheduleId, client: ClientDep) -> Schedule:
        """A schedule: its cron, task, args, whether it is enabled, and its next five fire times."""
        return await client.schedules.get(int(schedule_id))

    @patch(
        "/{schedule_id:str}",
        operation_id="UpdateSchedule",
        summary="Change a schedule",
        opt=needs(Scope.SCHEDULES_WRITE),
        responses=error_responses(body=True, e404=_NO_SCHEDULE, e422=_BAD_SCHEDULE),
    )
    async def update(
        self, schedule_id: ScheduleId, data: JSONBody[ScheduleChange], client: ClientDep
    ) -> Schedule:
        """Change cron, timezone, args, enabled…; the next run is recomputed."""
        return await client.schedules.update(int(schedule_id), data.model_dump(exclude_unset=True))

    @delete(
        "/{schedule_id:str}",
        operation_id="DeleteSchedule",
        summary="Delete a schedule",
        status_code=HTTP_204_NO_CONTENT,
        opt=needs(Scope.SCHEDULES_WRITE),
        responses=error_responses(e404=_NO_SCHEDULE, e422="A bad id."),
    )
    async def remove(self, schedule_id: ScheduleId, client: ClientDep) -> None:
        """Delete the schedule; the jobs it enqueued stay."""
        await client.schedules.delete(int(schedule_id))

    @post(
        "/{schedule_id:str}/trigger",
        operation_id="TriggerSchedule",
        summary="Run a schedule now",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.SCHEDULES_WRITE),
        response_description="The job enqueued.",
        responses=error_responses(
            e404=_NO_SCHEDULE, e409="Triggered twice in the same microsecond: retry.", e422="A bad id."
        ),
    )
    async def trigger(self, schedule_id: ScheduleId, client: ClientDep) -> Job:
        """Enqueue the schedule's job now; it appears in GET /jobs?schedule_id=."""
        return await client.schedules.trigger(int(schedule_id))
