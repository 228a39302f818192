"""/schedules: cron rows managed over the API, and "run now"."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, delete, get, patch, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, ConfigDict, Field

from skiplock.api.errors import validation_as_422
from skiplock.api.plugin import ClientDep
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.queue.models import Job
from skiplock.queue.schedules import Schedule, ScheduleSpec
from skiplock.queue_names import QUEUE_NAME

ScheduleId = Annotated[str, Parameter(pattern=r"^[1-9][0-9]{0,17}$", description="The schedule's id.")]


class ScheduleCreate(ScheduleSpec):
    model_config = ConfigDict(extra="forbid")


class ScheduleChange(BaseModel):
    """Fields to change; the next run is recomputed."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = Field(default=None, max_length=100)
    task: str | None = Field(default=None, min_length=1, max_length=200)
    args: dict[str, Any] | None = None
    queue: str | None = Field(default=None, pattern=QUEUE_NAME)
    priority: int | None = None
    enabled: bool | None = None
    misfire: Literal["skip", "catch_up"] | None = None


class ScheduleController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/schedules"
    tags = ["schedules"]
    exception_handlers = {ValidationException: validation_as_422}

    @get("/", operation_id="ListSchedules")
    async def list_schedules(self, client: ClientDep) -> list[Schedule]:
        """Every schedule, by name, with its next five fire times."""
        return await client.schedules.all()

    @post("/", operation_id="CreateSchedule", opt=needs(Scope.SCHEDULES_WRITE))
    async def create(self, data: JSONBody[ScheduleCreate], client: ClientDep) -> Schedule:
        """201 with the schedule; 422 naming the field for a bad cron, timezone, task or args;
        409 when the name is taken."""
        return await client.schedules.create(data)

    @get("/{schedule_id:str}", operation_id="GetSchedule")
    async def get_schedule(self, schedule_id: ScheduleId, client: ClientDep) -> Schedule:
        return await client.schedules.get(int(schedule_id))

    @patch("/{schedule_id:str}", operation_id="UpdateSchedule", opt=needs(Scope.SCHEDULES_WRITE))
    async def update(
        self, schedule_id: ScheduleId, data: JSONBody[ScheduleChange], client: ClientDep
    ) -> Schedule:
        """Change cron, timezone, args, enabled…; the next run is recomputed."""
        return await client.schedules.update(int(schedule_id), data.model_dump(exclude_unset=True))

    @delete(
        "/{schedule_id:str}",
        operation_id="DeleteSchedule",
        status_code=HTTP_204_NO_CONTENT,
        opt=needs(Scope.SCHEDULES_WRITE),
    )
    async def remove(self, schedule_id: ScheduleId, client: ClientDep) -> None:
        await client.schedules.delete(int(schedule_id))

    @post(
        "/{schedule_id:str}/trigger",
        operation_id="TriggerSchedule",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.SCHEDULES_WRITE),
    )
    async def trigger(self, schedule_id: ScheduleId, client: ClientDep) -> Job:
        """Enqueue the schedule's job now; it appears in GET /jobs?schedule_id=."""
        return await client.schedules.trigger(int(schedule_id))
