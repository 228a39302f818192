"""/jobs/{id}/result and /workflows/{id}/result: long polls for a job's or a workflow's outcome."""

from __future__ import annotations

import math
from typing import Annotated, Any

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from pydantic import BaseModel, Field

from skiplock.api.jobs import JobId
from skiplock.api.openapi import NEEDS_KEY
from skiplock.api.plugin import EngineDep
from skiplock.api.schemas import error_responses
from skiplock.api.security import needs
from skiplock.api.workflows import WorkflowId
from skiplock.auth import Scope
from skiplock.errors import InvalidArgumentsError
from skiplock.queue.models import AttemptError, JobState
from skiplock.queue.workflows import FailedStep, WorkflowState

#: The longest wait a request may ask for, in seconds.
MAX_WAIT_S = 60


class JobResult(BaseModel):
    """A job's outcome (200), or where it is when the wait ended (202)."""

    state: JobState
    result: Any = Field(default=None, description="What the task returned; null until it succeeded.")
    error: AttemptError | None = Field(
        default=None, description="The last attempt's error once the job failed or was cancelled, or null."
    )


class WorkflowResult(BaseModel):
    """A workflow's outcome (200), or where it is when the wait ended (202)."""

    state: WorkflowState
    result: dict[str, Any] | None = Field(
        default=None,
        description="Once final: the results of the steps nothing depends on, by name (one that did "
        "not succeed as {state, error}); null until then.",
    )
    error: FailedStep | None = Field(
        default=None,
        description="Once failed or cancelled: its first failed step (else its first cancelled one) "
        "with that step's last error; null otherwise.",
    )


_BAD_WAIT = f"`wait` is not a number from 0 to {MAX_WAIT_S}."
_WAIT_DOC = f"Seconds to wait for it to finish: 0 to {MAX_WAIT_S} (default 0)."


def parse_wait(raw: str | None) -> float:
    """Seconds to wait: a number from 0 to MAX_WAIT_S (default 0); else a 422 naming ``wait``."""
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT_S:  # nan and inf fail too
        message = f"wait must be a number of seconds from 0 to {MAX_WAIT_S}, got {raw[:40]!r}"
        raise InvalidArgumentsError(message, errors=[{"field": "wait", "message": message}])
    return seconds


class JobResultController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/jobs"
    tags = ["jobs"]
    security = NEEDS_KEY

    @get(
        "/{job_id:str}/result",
        operation_id="GetJobResult",
        summary="Wait for a job's result",
        response_description="The job is final: its state, result and error.",
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(JobResult, description="Not final yet: the job's current state."),
            **error_responses(e404="No job has this id.", e422=_BAD_WAIT),
        },
        description=(
            "200 with {state, result, error} as soon as the job is final (succeeded, failed or "
            f"cancelled); after `wait` seconds (0 to {MAX_WAIT_S}, default 0: answer at once) 202 "
            "with its current state, result and error null. Waits on the database's notifications "
            "and holds no database connection while it waits; a server shutting down answers "
            "waiting requests at once with 202. 404 for an unknown job, 422 for a bad `wait`."
        ),
    )
    async def get_result(
        self,
        job_id: JobId,
        engine: EngineDep,
        wait: Annotated[
            str | None,
            Parameter(description=_WAIT_DOC),
        ] = None,
    ) -> Response[JobResult]:
        """A job's outcome, waiting up to ``wait`` seconds for it to be final."""
        outcome = await engine.results.wait(int(job_id), parse_wait(wait))
        if not outcome.final:
            return Response(JobResult(state=outcome.state), status_code=HTTP_202_ACCEPTED)
        body = JobResult(state=outcome.state, result=outcome.result, error=outcome.error)
        return Response(body, status_code=HTTP_200_OK)


class WorkflowResultController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/workflows"
    tags = ["workflows"]
    security = NEEDS_KEY

    @get(
        "/{workflow_id:str}/result",
        operation_id="GetWorkflowResult",
        summary="Wait for a workflow's result",
        response_description="The workflow is final: its state, result and error.",
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(
                WorkflowResult, description="Not final yet: the workflow's current state."
            ),
            **error_responses(e404="No workflow has this id.", e422=_BAD_WAIT),
        },
        description=(
            "200 with {state, result, error} as soon as the workflow is final (succeeded, failed or "
            "cancelled, every step ended): `result` is an object keyed by the names of the steps "
            "nothing depends on, each its result (a step that did not succeed as {state, error}); "
            "`error` the step that failed. After `wait` seconds (0 to "
            f"{MAX_WAIT_S}, default 0: answer at once) 202 with its current state, result and error "
            "null. Waits on the database's notifications (the transaction that ends its last step "
            "tells it) and holds no database connection while it waits; a server shutting down "
            "answers waiting requests at once with 202. 404 for an unknown workflow, 422 for a bad "
            "`wait`."
        ),
    )
    async def get_result(
        self,
        workflow_id: WorkflowId,
        engine: EngineDep,
        wait: Annotated[str | None, Parameter(description=_WAIT_DOC)] = None,
    ) -> Response[WorkflowResult]:
        """A workflow's outcome, waiting up to ``wait`` seconds for it to be final."""
        outcome = await engine.results.wait_workflow(int(workflow_id), parse_wait(wait))
        if not outcome.final:
            return Response(WorkflowResult(state=outcome.state), status_code=HTTP_202_ACCEPTED)
        body = WorkflowResult(state=outcome.state, result=outcome.result, error=outcome.error)
        return Response(body, status_code=HTTP_200_OK)
