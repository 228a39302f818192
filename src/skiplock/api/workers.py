"""/workers: the fleet (one row per process boot) and remote control of one process."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from skiplock.api.errors import validation_as_422
from skiplock.api.openapi import NEEDS_KEY
from skiplock.api.plugin import ClientDep
from skiplock.api.schemas import error_responses
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.queue.limits import MAX_CONCURRENCY
from skiplock.queue.workers import WorkerInfo

WorkerId = Annotated[
    str, Parameter(pattern=r"^[^/]{1,300}$", description="The worker's id (host:pid:suffix).")
]
NOT_FOUND = "No worker has this id."
#: What a request to one worker may answer besides 202.
REQUEST_ERRORS = error_responses(
    e404=NOT_FOUND,
    e409="The worker is offline (it stopped or missed its heartbeats), or jobs were asked of an API-only one",
)


class WorkerChange(BaseModel):
    """PATCH /workers/{id}: the process's new concurrency."""

    model_config = ConfigDict(extra="forbid")

    concurrency: StrictInt = Field(ge=1, le=MAX_CONCURRENCY, description="Jobs it runs at once from now on.")

    @field_validator("concurrency", mode="before")
    @classmethod
    def _a_json_integer(cls, value: object) -> object:
        # The request's JSON may reach the model in lax mode: "4" and true are not concurrencies.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")  # pydantic wants a ValueError
        return value


class WorkerController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/workers"
    tags = ["workers"]
    security = NEEDS_KEY
    exception_handlers = {ValidationException: validation_as_422}

    @get("/", operation_id="ListWorkers", summary="List workers", responses=error_responses())
    async def list_workers(self, client: ClientDep) -> list[WorkerInfo]:
        """Every process, newest boot first: role, queues and limits, state (offline once it stopped
        or missed three heartbeats), heartbeat age, and the running jobs its leases hold."""
        return await client.workers.all()

    @get(
        "/{worker_id:str}",
        operation_id="GetWorker",
        summary="Get a worker",
        responses=error_responses(e404=NOT_FOUND),
    )
    async def get_worker(self, worker_id: WorkerId, client: ClientDep) -> WorkerInfo:
        """One process: its row, state, heartbeat age and running jobs."""
        return await client.workers.get(worker_id)

    @post(
        "/{worker_id:str}/quiet",
        operation_id="QuietWorker",
        summary="Quiet a worker",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.ADMIN),
        responses=REQUEST_ERRORS,
    )
    async def quiet(self, worker_id: WorkerId, client: ClientDep) -> WorkerInfo:
        """It claims no more jobs, within a second; its running jobs finish."""
        return await client.workers.quiet(worker_id)

    @post(
        "/{worker_id:str}/resume",
        operation_id="ResumeWorker",
        summary="Resume a worker",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.ADMIN),
        responses=REQUEST_ERRORS,
    )
    async def resume(self, worker_id: WorkerId, client: ClientDep) -> WorkerInfo:
        """It claims again, within a second."""
        return await client.workers.resume(worker_id)

    @post(
        "/{worker_id:str}/stop",
        operation_id="StopWorker",
        summary="Stop a worker",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.ADMIN),
        responses=REQUEST_ERRORS,
    )
    async def stop(self, worker_id: WorkerId, client: ClientDep) -> WorkerInfo:
        """It shuts down gracefully, as on SIGTERM (claiming stops, running jobs get the grace
        period, the rest are handed back), whichever replica is asked."""
        return await client.workers.stop(worker_id)

    @patch(
        "/{worker_id:str}",
        operation_id="UpdateWorker",
        summary="Change a worker's concurrency",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.ADMIN),
        responses=error_responses(
            body=True,
            e404=NOT_FOUND,
            e409="The worker is offline, or API-only.",
            e422="A bad concurrency (`detail` names the field).",
        ),
    )
    async def update(
        self, worker_id: WorkerId, data: JSONBody[WorkerChange], client: ClientDep
    ) -> WorkerInfo:
        """A live concurrency change, within a second (running jobs over it finish); 422 naming
        the field for a bad value."""
        return await client.workers.set_concurrency(worker_id, data.concurrency)
