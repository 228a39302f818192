"""/jobs: enqueue, read, list, cancel, retry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import RequestBody
from litestar.params import JSONBody, Parameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from pydantic import ValidationError

from skiplock.api.bounds import decode_json_body
from skiplock.api.openapi import NEEDS_KEY, documented, media
from skiplock.api.plugin import ClientDep
from skiplock.api.schemas import QUEUE_NAME, BatchCreated, JobCreate, JobPage, error_responses, parse_cursor
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.errors import InvalidArgumentsError
from skiplock.queue.client import EnqueueRequest
from skiplock.queue.models import Job, JobState

# A string path parameter so that "/jobs/abc" is a 400 naming the parameter, not a 404.
JobId = Annotated[str, Parameter(pattern=r"^[1-9][0-9]{0,17}$", description="The job's id.")]


MAX_BATCH = 10_000

#: The body of POST /jobs shown in the schema.
JOB_EXAMPLES: dict[str, Any] = {
    "sleep": {"task": "sleep", "args": {"seconds": 5, "steps": 5}},
    "delayed": {"task": "sleep", "args": {"seconds": 1}, "queue": "default", "priority": 10, "delay_s": 60},
    "unique": {"task": "sleep", "args": {"seconds": 1}, "unique_key": "nightly-report"},
}
_AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
#: A job as the API answers it, shown in the schema (made by the model, so it stays one).
JOB_ANSWER = Job(
    id=42,
    task="sleep",
    queue="default",
    state=JobState.QUEUED,
    priority=0,
    args={"seconds": 5.0, "steps": 5, "fail": False},
    attempts=0,
    max_attempts=3,
    timeout_s=None,
    run_at=_AT,
    created_at=_AT,
    started_at=None,
    finished_at=None,
    progress=None,
    result=None,
    errors=[],
    unique_key=None,
).model_dump(mode="json")
JOB_REF = {"$ref": "#/components/schemas/JobCreate"}
BATCH_BODY = RequestBody(
    required=True,
    description=f"Up to {MAX_BATCH:,} jobs as for POST /jobs (without unique_key): a JSON array, or "
    "NDJSON, one job a line.",
    content={
        "application/json": media(
            {"type": "array", "items": JOB_REF, "maxItems": MAX_BATCH},
            two=[{"task": "sleep", "args": {"seconds": 1}}, {"task": "sleep", "args": {"seconds": 2}}],
        ),
        "application/x-ndjson": media(
            {"type": "string", "description": "One JSON job (as for POST /jobs) a line."},
            two='{"task": "sleep", "args": {"seconds": 1}}\n{"task": "sleep", "args": {"seconds": 2}}\n',
        ),
    },
)


def parse_batch(body: bytes, content_type: str) -> list[Any]:
    """The batch's items from a JSON array or NDJSON (one job per line)."""
    if "ndjson" in content_type:
        lines = [line for line in body.splitlines() if line.strip()]
        items = [decode_json_body(line, where=f"[{n}]") for n, line in enumerate(lines)]
    else:
        items = decode_json_body(body)
    if not isinstance(items, list):
        raise InvalidArgumentsError("a batch is a JSON array of jobs (or NDJSON, one job a line)")
    if len(items) > MAX_BATCH:
        raise InvalidArgumentsError(f"at most {MAX_BATCH} jobs a batch, got {len(items)}", count=len(items))
    return items


def batch_request(index: int, item: Any) -> EnqueueRequest:
    """One batch item as an enqueue request; InvalidArgumentsError naming its index otherwise."""
    try:
        job = JobCreate.model_validate(item)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "job", "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidArgumentsError(f"job {index}: {summary}", index=index, errors=errors) from exc
    if job.unique_key is not None:
        raise InvalidArgumentsError(f"job {index}: unique_key needs POST /jobs", index=index)
    return job.request()


class JobController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/jobs"
    tags = ["jobs"]
    security = NEEDS_KEY

    @post(
        "/",
        opt=needs(Scope.JOBS_WRITE),
        operation_id="EnqueueJob",
        summary="Enqueue a job",
        status_code=HTTP_201_CREATED,
        response_description="The new job.",
        responses={
            HTTP_200_OK: ResponseSpec(
                Job, description="A live job holds unique_key: that job.", generate_examples=False
            ),
            **error_responses(
                body=True,
                e409="Another request holding the same unique_key is enqueueing now: retry.",
                e422="An unknown task, or args its model refuses (`extra.errors` names the fields).",
            ),
        },
        operation_class=documented(examples=JOB_EXAMPLES, answers={201: JOB_ANSWER, 200: JOB_ANSWER}),
        description="201 with the new job, its args validated against the task's model first; 200 with "
        "the existing job when a live job holds unique_key. Options left out take the task's defaults.",
    )
    async def enqueue(self, data: JSONBody[JobCreate], client: ClientDep) -> Response[Job]:
        """Enqueue a job; its args are validated against the task's model first."""
        job = await client.enqueue_request(data.request())
        return Response(job, status_code=HTTP_201_CREATED if job.created else HTTP_200_OK)

    @post(
        "/batch",
        opt=needs(Scope.JOBS_WRITE),
        operation_id="EnqueueJobs",
        summary="Enqueue many jobs",
        status_code=HTTP_201_CREATED,
        response_description="The new jobs' ids, in the order given.",
        responses=error_responses(
            body=True,
            e422=f"A job is invalid (`extra.index` names it), more than {MAX_BATCH:,} jobs, a unique_key, "
            "or a body that is not an array: nothing is written.",
        ),
        operation_class=documented(BATCH_BODY),
    )
    async def enqueue_batch(self, request: Request[Any, Any, Any], client: ClientDep) -> BatchCreated:
        """Enqueue up to 10,000 jobs with one COPY. All are validated first: one bad job is a 422
        naming its index, and nothing is written. ``unique_key`` needs POST /jobs."""
        items = parse_batch(await request.body(), request.headers.get("content-type", ""))
        requests = [batch_request(index, item) for index, item in enumerate(items)]
        ids = await client.enqueue_many(requests)
        return BatchCreated(count=len(ids), ids=ids)

    @get(
        "/{job_id:str}",
        operation_id="GetJob",
        summary="Get a job",
        operation_class=documented(answers={200: JOB_ANSWER}),
        responses=error_responses(e404="No job has this id."),
    )
    async def get_job(self, job_id: JobId, client: ClientDep) -> Job:
        """One job: state, attempts, progress, result, errors, timestamps."""
        return await client.get(int(job_id))

    @get("/", operation_id="ListJobs", summary="List jobs", responses=error_responses())
    async def list_jobs(
        self,
        client: ClientDep,
        job_state: Annotated[JobState | None, QueryParameter(name="state")] = None,
        queue: Annotated[str | None, Parameter(pattern=QUEUE_NAME)] = None,
        task: Annotated[str | None, Parameter(min_length=1, max_length=200)] = None,
        cursor: Annotated[
            str | None, Parameter(max_length=40, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        schedule_id: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None,
        workflow_id: Annotated[
            int | None, QueryParameter(ge=1, le=2**63 - 1, description="Only this workflow's steps.")
        ] = None,
    ) -> JobPage:
        """Jobs newest first, filtered by state, queue, task, schedule and workflow, a page at a time."""
        jobs = await client.list_jobs(
            state=job_state,
            queue=queue,
            task=task,
            before_id=parse_cursor(cursor, below=2**63),
            limit=limit,
            schedule_id=schedule_id,
            workflow_id=workflow_id,
        )
        next_cursor = str(jobs[-1].id) if len(jobs) == limit else None
        return JobPage(items=jobs, next_cursor=next_cursor)

    @post(
        "/{job_id:str}/cancel",
        operation_id="CancelJob",
        summary="Cancel a job",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.JOBS_WRITE),
        responses=error_responses(e404="No job has this id.", e409="The job has finished."),
        description=(
            "202 with the job: a waiting or queued job is cancelled at once, a running one stops "
            "within about a second (its state says cancelled once it has). A workflow's step "
            "cancelled so cancels the steps that depend on it (under on_failure continue they run "
            "and see it cancelled). 409 once the job has finished, 404 for an unknown job."
        ),
    )
    async def cancel(self, job_id: JobId, client: ClientDep) -> Job:
        """Cancel a waiting or queued job, or stop a running one within about a second."""
        return await client.cancel(int(job_id))

    @post(
        "/{job_id:str}/retry",
        operation_id="RetryJob",
        summary="Retry a job",
        status_code=HTTP_202_ACCEPTED,
        opt=needs(Scope.JOBS_WRITE),
        responses=error_responses(
            e404="No job has this id.",
            e409="Not failed or cancelled, or a workflow's step (retry its workflow instead).",
        ),
        description=(
            "202 with the job back in its queue with at least one more attempt. 409 unless it "
            "failed or was cancelled, and for a workflow's step: POST /workflows/{id}/retry runs "
            "the workflow's failed and cancelled steps again with what depends on them. 404 for "
            "an unknown job."
        ),
    )
    async def retry(self, job_id: JobId, client: ClientDep) -> Job:
        """Put a failed or cancelled job back in its queue; 409 in any other state or for a step."""
        return await client.retry(int(job_id))
