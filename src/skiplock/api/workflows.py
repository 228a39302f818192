"""/workflows: start a DAG of steps, read, list, cancel and retry it."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.openapi.spec import RequestBody
from litestar.params import Parameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skiplock.api.bounds import decode_json_body
from skiplock.api.openapi import NEEDS_KEY, documented, media
from skiplock.api.plugin import ClientDep
from skiplock.api.schemas import error_responses, parse_cursor
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.errors import WorkflowInvalid
from skiplock.queue.tasks import MAX_PRIORITY
from skiplock.queue.workflows import MAX_STEPS, OnFailure, Step, Workflow, WorkflowInfo, WorkflowState
from skiplock.queue_names import QUEUE_NAME

WorkflowId = Annotated[str, Parameter(pattern=r"^[1-9][0-9]{0,17}$", description="The workflow's id.")]


class StepCreate(BaseModel):
    """One step: a job of ``task``, run once every step named in ``after`` has succeeded."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$", examples=["resize"])
    task: str = Field(min_length=1, max_length=200, examples=["echo"])
    args: dict[str, Any] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list, description="Names of the steps it runs after.")
    queue: str | None = Field(default=None, pattern=QUEUE_NAME)
    priority: int | None = Field(default=None, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)


class WorkflowCreate(BaseModel):
    """A workflow: its steps, and what a step's failure does to the steps after it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    on_failure: OnFailure = Field(
        default="cancel",
        description="cancel: a step failing for good cancels what depends on it; "
        "continue: dependents run anyway and see the failure in their upstream.",
    )
    steps: list[dict[str, Any]] = Field(
        min_length=1, description=f"At most {MAX_STEPS} steps (see StepCreate)."
    )


def _workflow_schema() -> dict[str, Any]:
    schema = WorkflowCreate.model_json_schema()
    schema["properties"]["steps"]["items"] = StepCreate.model_json_schema()
    schema["properties"]["steps"]["maxItems"] = MAX_STEPS
    return schema


WORKFLOW_BODY = RequestBody(
    required=True,
    description="The workflow: its steps (each a job of a task, run once the steps in its `after` "
    "succeeded) and what a failure does to the steps after it.",
    content={
        "application/json": media(
            _workflow_schema(),
            fan_in={
                "name": "thumbnails",
                "steps": [
                    {"name": "fetch", "task": "echo", "args": {"value": 1}},
                    {"name": "small", "task": "echo", "args": {"value": 2}, "after": ["fetch"]},
                    {"name": "large", "task": "echo", "args": {"value": 3}, "after": ["fetch"]},
                    {"name": "done", "task": "echo", "args": {"value": 4}, "after": ["small", "large"]},
                ],
            },
        )
    },
)


class WorkflowPage(BaseModel):
    """One page of workflows, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[WorkflowInfo]
    next_cursor: str | None


def _problems(exc: ValidationError, where: str) -> tuple[str, list[dict[str, str]]]:
    errors = [
        {"field": ".".join([where, *(str(p) for p in e["loc"])]), "message": e["msg"]}
        for e in exc.errors(include_url=False)
    ]
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors


def parse_workflow(body: Any) -> Workflow:
    """The request body as a :class:`Workflow`, or :class:`WorkflowInvalid` (422) naming the step
    and the field at fault. The graph itself (names, dependencies, cycles) and each step's task and
    args are checked by the client before anything is written."""
    try:
        spec = WorkflowCreate.model_validate(body)
    except ValidationError as exc:
        summary, errors = _problems(exc, "workflow")
        raise WorkflowInvalid(summary, errors=errors) from exc
    if len(spec.steps) > MAX_STEPS:
        raise WorkflowInvalid(f"at most {MAX_STEPS} steps a workflow, got {len(spec.steps)}", field="steps")
    steps = []
    for index, item in enumerate(spec.steps):
        try:
            step = StepCreate.model_validate(item)
        except ValidationError as exc:
            name = item.get("name") if isinstance(item, dict) else None
            label = f"step {name!r}" if isinstance(name, str) else f"steps[{index}]"
            summary, errors = _problems(exc, f"steps[{index}]")
            raise WorkflowInvalid(f"{label}: {summary}", step=name, index=index, errors=errors) from exc
        steps.append(
            Step(
                name=step.name,
                task=step.task,
                args=step.args,
                after=tuple(step.after),
                queue=step.queue,
                priority=step.priority,
                max_attempts=step.max_attempts,
                timeout_s=step.timeout_s,
            )
        )
    return Workflow(steps=tuple(steps), name=spec.name, on_failure=spec.on_failure)


class WorkflowController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/workflows"
    tags = ["workflows"]
    security = NEEDS_KEY

    @post(
        "/",
        opt=needs(Scope.JOBS_WRITE),
        operation_id="StartWorkflow",
        summary="Start a workflow",
        status_code=HTTP_201_CREATED,
        response_description="The workflow, with each step's job id and state.",
        responses=error_responses(
            body=True, e422="A cycle, an unknown or repeated step, an unknown task, bad args, too many steps."
        ),
        operation_class=documented(WORKFLOW_BODY),
    )
    async def start(self, request: Request[Any, Any, Any], client: ClientDep) -> WorkflowInfo:
        """Start a workflow: 201 with it and each step's job id and state. Checked before anything
        is written: a cycle (422 naming its steps), an unknown step in ``after``, a name given
        twice, an unknown task or bad args (422 naming the step and the field), more than 10,000
        steps (422)."""
        workflow = parse_workflow(decode_json_body(await request.body()))
        return await client.start(workflow)

    @get(
        "/{workflow_id:str}",
        operation_id="GetWorkflow",
        summary="Get a workflow",
        responses=error_responses(e404="No workflow has this id."),
    )
    async def get_workflow(self, workflow_id: WorkflowId, client: ClientDep) -> WorkflowInfo:
        """A workflow: state and progress (from its own row), and its steps with states and edges."""
        return await client.workflow(int(workflow_id))

    @get("/", operation_id="ListWorkflows", summary="List workflows", responses=error_responses())
    async def list_workflows(
        self,
        client: ClientDep,
        workflow_state: Annotated[WorkflowState | None, QueryParameter(name="state")] = None,
        cursor: Annotated[
            str | None, Parameter(max_length=40, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> WorkflowPage:
        """Workflows newest first, filtered by state, a page at a time (without their steps)."""
        items = await client.list_workflows(
            state=workflow_state, before_id=parse_cursor(cursor, below=2**63), limit=limit
        )
        return WorkflowPage(items=items, next_cursor=str(items[-1].id) if len(items) == limit else None)

    @post(
        "/{workflow_id:str}/cancel",
        operation_id="CancelWorkflow",
        summary="Cancel a workflow",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.JOBS_WRITE),
        responses=error_responses(e404="No workflow has this id.", e409="The workflow has finished."),
    )
    async def cancel(self, workflow_id: WorkflowId, client: ClientDep) -> WorkflowInfo:
        """Cancel every step not finished (running ones stop within about a second); 409 once the
        workflow has finished."""
        return await client.cancel_workflow(int(workflow_id))

    @post(
        "/{workflow_id:str}/retry",
        operation_id="RetryWorkflow",
        summary="Retry a workflow's failed steps",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.JOBS_WRITE),
        responses=error_responses(
            e404="No workflow has this id.",
            e409="Not failed or cancelled, or some of its steps have not ended yet.",
        ),
    )
    async def retry(self, workflow_id: WorkflowId, client: ClientDep) -> WorkflowInfo:
        """Run the failed and cancelled steps again with everything downstream of them (succeeded
        ones are not run again); 409 unless the workflow failed or was cancelled and has stopped."""
        return await client.retry_workflow(int(workflow_id))
