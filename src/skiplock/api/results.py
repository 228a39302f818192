"""/jobs/{id}/result: a long poll for a job's outcome."""

from __future__ import annotations

import math
from typing import Annotated, Any

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from pydantic import BaseModel, Field

from skiplock.api.jobs import JobId
from skiplock.api.plugin import EngineDep
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.errors import InvalidArgumentsError
from skiplock.queue.models import AttemptError, JobState

#: The longest wait a request may ask for, in seconds.
MAX_WAIT_S = 60


class JobResult(BaseModel):
    """A job's outcome (200), or where it is when the wait ended (202)."""

    state: JobState
    result: Any = Field(default=None, description="What the task returned; null until it succeeded.")
    error: AttemptError | None = Field(
        default=None, description="The last attempt's error once the job failed or was cancelled, or null."
    )


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

    @get(
        "/{job_id:str}/result",
        operation_id="GetJobResult",
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(JobResult, description="Not final yet: the job's current state.")
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
            Parameter(description=f"Seconds to wait for the job to finish: 0 to {MAX_WAIT_S} (default 0)."),
        ] = None,
    ) -> Response[JobResult]:
        """A job's outcome, waiting up to ``wait`` seconds for it to be final."""
        outcome = await engine.results.wait(int(job_id), parse_wait(wait))
        if not outcome.final:
            return Response(JobResult(state=outcome.state), status_code=HTTP_202_ACCEPTED)
        body = JobResult(state=outcome.state, result=outcome.result, error=outcome.error)
        return Response(body, status_code=HTTP_200_OK)
