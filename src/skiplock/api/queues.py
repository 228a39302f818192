"""/queues and /tasks: what runs where, and pausing."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import Parameter

from skiplock.api.plugin import ClientDep, EngineDep
from skiplock.api.schemas import QUEUE_NAME, QueueOut, TaskInfo
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.queue.models import FailureGroup, QueueInfo

QueueName = Annotated[str, Parameter(pattern=QUEUE_NAME, description="The queue's name.")]


def _out(queue: QueueInfo, engine: EngineDep) -> QueueOut:
    served = engine.queues if engine.settings.worker else {}
    return QueueOut(**queue.model_dump(), concurrency=served.get(queue.name))


class QueueController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/queues"
    tags = ["queues"]

    @get("/", operation_id="ListQueues")
    async def list_queues(self, client: ClientDep, engine: EngineDep) -> list[QueueOut]:
        """Every queue with jobs, settings or workers here: counts per state, paused, this process's limit."""
        known = {q.name: q for q in await client.queues()}
        for name in engine.queues if engine.settings.worker else ():
            known.setdefault(name, QueueInfo(name=name, paused=False, counts={}))
        return [_out(known[name], engine) for name in sorted(known)]

    @post("/{name:str}/pause", operation_id="PauseQueue", status_code=200, opt=needs(Scope.ADMIN))
    async def pause(self, name: QueueName, client: ClientDep, engine: EngineDep) -> QueueOut:
        """No process claims from a paused queue; running jobs finish."""
        return _out(await client.set_paused(name, True), engine)

    @post("/{name:str}/resume", operation_id="ResumeQueue", status_code=200, opt=needs(Scope.ADMIN))
    async def resume(self, name: QueueName, client: ClientDep, engine: EngineDep) -> QueueOut:
        """Workers claim from the queue again at once."""
        return _out(await client.set_paused(name, False), engine)


@get("/failures", operation_id="ListFailures", tags=["jobs"], opt=needs(Scope.JOBS_READ))
async def failures(client: ClientDep) -> list[FailureGroup]:
    """Failed jobs grouped by task and the last attempt's error type, with their newest ids."""
    return await client.failures()


class TaskController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/tasks"
    tags = ["tasks"]

    @get("/", operation_id="ListTasks")
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
