"""/queues and /tasks: what runs where, and pausing."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, Parameter

from skiplock.api.errors import validation_as_422
from skiplock.api.openapi import NEEDS_KEY, documented
from skiplock.api.plugin import ClientDep, EngineDep
from skiplock.api.schemas import QUEUE_NAME, QueueLimitsChange, QueueOut, TaskInfo, error_responses
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.queue.models import FailureGroup, QueueInfo
from skiplock.queue.workers import served_by

QueueName = Annotated[str, Parameter(pattern=QUEUE_NAME, description="The queue's name.")]


def _out(queue: QueueInfo, engine: EngineDep, workers: dict[str, int]) -> QueueOut:
    """``workers``: Workers.served_queues, how many live workers serve each queue."""
    served = engine.queues if engine.settings.worker else {}
    concurrency = served.get(queue.name)
    if concurrency is not None and queue.limits.concurrency is not None:  # the queue's row overrides it
        concurrency = min(queue.limits.concurrency, engine.settings.concurrency)
    by = served_by(queue.name, workers)
    return QueueOut(**queue.model_dump(), concurrency=concurrency, served_by=by, unserved=by == 0)


class QueueController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/queues"
    tags = ["queues"]
    security = NEEDS_KEY

    @get("/", operation_id="ListQueues", summary="List queues", responses=error_responses())
    async def list_queues(self, client: ClientDep, engine: EngineDep) -> list[QueueOut]:
        """Every queue with jobs, settings or workers here: counts per state, paused, this process's limit."""
        known = {q.name: q for q in await client.queues()}
        for name in engine.queues if engine.settings.worker else ():
            known.setdefault(name, QueueInfo(name=name, paused=False, counts={}))
        workers = await client.workers.served_queues()
        return [_out(known[name], engine, workers) for name in sorted(known)]

    @patch(
        "/{name:str}",
        operation_id="UpdateQueueLimits",
        summary="Change a queue's limits",
        opt=needs(Scope.ADMIN),
        responses=error_responses(body=True, e422="A bad value or queue name (`detail` names the field)."),
        operation_class=documented(examples={"limits": {"concurrency": 5, "rate_limit": "100/minute"}}),
        exception_handlers={ValidationException: validation_as_422},
    )
    async def update_limits(
        self, name: QueueName, data: JSONBody[QueueLimitsChange], client: ClientDep, engine: EngineDep
    ) -> QueueOut:
        """Change the queue's limits for every process, within a second: ``concurrency`` (per
        process), ``global_concurrency``, ``rate_limit`` (``"100/minute"``); a field left out stays,
        null clears it. Kept in the database: they outlive restarts. 422 naming the field for a bad
        value (nothing is changed then)."""
        return _out(
            await client.set_limits(name, data.changes()), engine, await client.workers.served_queues()
        )

    @post(
        "/{name:str}/pause",
        operation_id="PauseQueue",
        summary="Pause a queue",
        status_code=200,
        opt=needs(Scope.ADMIN),
        responses=error_responses(),
    )
    async def pause(self, name: QueueName, client: ClientDep, engine: EngineDep) -> QueueOut:
        """No process claims from a paused queue; running jobs finish."""
        return _out(await client.set_paused(name, True), engine, await client.workers.served_queues())

    @post(
        "/{name:str}/resume",
        operation_id="ResumeQueue",
        summary="Resume a queue",
        status_code=200,
        opt=needs(Scope.ADMIN),
        responses=error_responses(),
    )
    async def resume(self, name: QueueName, client: ClientDep, engine: EngineDep) -> QueueOut:
        """Workers claim from the queue again at once."""
        return _out(await client.set_paused(name, False), engine, await client.workers.served_queues())


@get(
    "/failures",
    operation_id="ListFailures",
    summary="List failures by task and error",
    tags=["jobs"],
    opt=needs(Scope.JOBS_READ),
    security=NEEDS_KEY,
    responses=error_responses(),
)
async def failures(client: ClientDep) -> list[FailureGroup]:
    """Failed jobs grouped by task and the last attempt's error type, with their newest ids: the
    newest 10,000 failed jobs, so the answer takes the same time however many failed."""
    return await client.failures()


class TaskController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/tasks"
    tags = ["tasks"]
    security = NEEDS_KEY

    @get("/", operation_id="ListTasks", summary="List tasks", responses=error_responses(database=False))
    async def list_tasks(self, client: ClientDep) -> list[TaskInfo]:
        """Registered tasks with their defaults and argument JSON schemas."""
        return [
            TaskInfo(
                name=t.name,
                queue=t.queue,
                priority=t.priority,
                max_attempts=t.max_attempts,
                timeout_s=t.timeout_s,
                description=t.description,
                args_schema=t.args_schema(),
            )
            for t in client.registry
        ]
