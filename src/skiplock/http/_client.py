"""``skiplock.http.Client``: the in-process client's methods over skiplock's HTTP API, for services
that reach skiplock over the network and not its database."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel

from skiplock._extras import require
from skiplock.errors import (
    AccessDenied,
    BusyError,
    ConflictError,
    DatabaseError,
    InvalidArgumentsError,
    InvalidStateError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    ResultTimeout,
    ServiceUnreachable,
    SkiplockError,
    UnknownTaskError,
    WorkflowFailed,
    WorkflowInvalid,
    WorkflowNotFound,
)
from skiplock.queue import EnqueueRequest, Job, JobState, Workflow, WorkflowInfo
from skiplock.queue.models import AttemptError
from skiplock.queue.workflows import FailedStep

if TYPE_CHECKING:
    import httpx

#: The longest wait one GET /jobs/{id}/result may ask for (the server's limit).
MAX_WAIT_S = 60.0


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _body(request: EnqueueRequest) -> dict[str, Any]:
    """POST /jobs's body: what is set of the request (None takes the task's default)."""
    fields = {
        "task": request.task,
        "args": _json(request.args) if request.args is not None else {},
        "queue": request.queue,
        "priority": request.priority,
        "run_at": request.run_at,
        "delay_s": request.delay_s,
        "max_attempts": request.max_attempts,
        "timeout_s": request.timeout_s,
        "unique_key": request.unique_key,
        "expires_in_s": request.expires_in_s,
        "expires_at": request.expires_at,
    }
    return {key: _json(value) for key, value in fields.items() if value is not None}


def _workflow_body(workflow: Workflow) -> dict[str, Any]:
    """POST /workflows's body."""
    steps = [
        {
            "name": step.name,
            "task": step.task,
            "args": _json(step.args) if step.args is not None else {},
            "after": list(step.after),
            "queue": step.queue,
            "priority": step.priority,
            "max_attempts": step.max_attempts,
            "timeout_s": step.timeout_s,
        }
        for step in workflow.steps
    ]
    body = {"name": workflow.name, "on_failure": workflow.on_failure}
    return {
        **{k: v for k, v in body.items() if v is not None},
        "steps": [{k: v for k, v in step.items() if v is not None} for step in steps],
    }


def error_of(response: httpx.Response, *, workflow: bool = False) -> SkiplockError:
    """The skiplock error an error answer stands for, with its ``detail`` as the message and its
    ``extra`` (and the status) as the error's extra; ``workflow``: of a workflow's route (a 404 is
    :class:`WorkflowNotFound`, a 422 :class:`WorkflowInvalid`)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    detail = str(body.get("detail") or response.reason_phrase or f"HTTP {response.status_code}")
    extra = body.get("extra")
    extra = dict(extra) if isinstance(extra, dict) else {"errors": extra} if extra else {}
    extra["status"] = status = response.status_code
    if status in (401, 403):
        return AccessDenied(detail, **extra)
    if status == 404:
        return WorkflowNotFound(detail, **extra) if workflow else JobNotFound(detail, **extra)
    if status == 409:
        return InvalidStateError(detail, **extra) if "state" in extra else ConflictError(detail, **extra)
    if status == 422:
        if workflow:
            return WorkflowInvalid(detail, **extra)
        if detail.startswith("unknown task"):
            return UnknownTaskError(detail, **extra)
        return InvalidArgumentsError(detail, **extra)
    if status in (429, 503):
        if "retry-after" in response.headers:
            extra["retry_after"] = response.headers["retry-after"]
        return DatabaseError(detail, **extra) if "request_id" in extra else BusyError(detail, **extra)
    if status < 500:
        return InvalidArgumentsError(detail, **extra)
    return SkiplockError(detail, **extra)


class Client:
    """``async with skiplock.http.Client("https://jobs.example.com", api_key=…) as client:``: the
    methods of :class:`skiplock.Client` that a remote service uses (enqueue, enqueue_request,
    enqueue_many, get, wait_for_result, cancel, retry, list_jobs; start, workflow,
    wait_for_workflow, cancel_workflow, retry_workflow), answering the same models and
    raising the same errors; a service it cannot reach is :class:`ServiceUnreachable`, a key the
    service refuses :class:`AccessDenied`. Args are validated by the service (a 422 is
    :class:`InvalidArgumentsError`, with ``extra["errors"]`` naming the fields)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        lib = require("http", "skiplock.http.Client")  # httpx, or the error naming the extra
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient = lib.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self._transport_error: type[Exception] = lib.TransportError

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(self, method: str, path: str, *, wait_s: float = 0, **options: Any) -> httpx.Response:
        timeout = self.timeout_s + wait_s
        try:
            response: httpx.Response = await self._http.request(method, path, timeout=timeout, **options)
        except self._transport_error as exc:
            raise ServiceUnreachable(f"{method} {self._http.base_url}{path}: {exc!r}") from exc
        if response.status_code >= 400:
            raise error_of(response, workflow=path.startswith("/workflows"))
        return response

    async def enqueue(
        self,
        task: str,
        args: Any = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay_s: float | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        unique_key: str | None = None,
        expires_in_s: float | None = None,
        expires_at: datetime | None = None,
    ) -> Job:
        """``POST /jobs``: the new job (``created`` False: the live job holding ``unique_key``)."""
        request = EnqueueRequest(
            task,
            args,
            queue,
            priority,
            run_at,
            delay_s,
            max_attempts,
            timeout_s,
            unique_key,
            expires_in_s,
            expires_at,
        )
        return await self.enqueue_request(request)

    async def enqueue_request(self, request: EnqueueRequest) -> Job:
        response = await self._call("POST", "/jobs", json=_body(request))
        job = Job.model_validate(response.json())
        return job.model_copy(update={"created": response.status_code == 201})

    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[int]:
        """``POST /jobs/batch``: every job validated first (one bad job is an
        :class:`InvalidArgumentsError` naming its ``index``, and nothing is written); the new ids."""
        if not requests:
            return []
        response = await self._call("POST", "/jobs/batch", json=[_body(r) for r in requests])
        return [int(i) for i in response.json()["ids"]]

    async def get(self, job_id: int) -> Job:
        return Job.model_validate((await self._call("GET", f"/jobs/{job_id}")).json())

    async def wait_for_result(self, job_id: int, timeout_s: float | None = 30) -> Any:
        """The job's result once it has succeeded, waiting up to ``timeout_s`` seconds (None: no
        limit) with long polls of ``GET /jobs/{id}/result``. As :meth:`skiplock.Client.wait_for_result`:
        :class:`JobFailed` (:class:`JobCancelled`) with ``state`` and ``error``,
        :class:`ResultTimeout`, :class:`JobNotFound`."""
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = max(0.0, min(MAX_WAIT_S, deadline - time.monotonic()))
            response = await self._call("GET", f"/jobs/{job_id}/result", params={"wait": wait}, wait_s=wait)
            body = response.json()
            state = JobState(body["state"])
            if response.status_code == 200:
                if state == JobState.SUCCEEDED:
                    return body.get("result")
                error = AttemptError.model_validate(body["error"]) if body.get("error") else None
                kind = JobCancelled if state == JobState.CANCELLED else JobFailed
                raise kind(f"job {job_id} {state}", job_id=job_id, state=state, error=error)
            if time.monotonic() >= deadline:
                raise ResultTimeout(
                    f"job {job_id} is not final after {timeout_s} s", job_id=job_id, state=state
                )

    async def cancel(self, job_id: int) -> Job:
        return Job.model_validate((await self._call("POST", f"/jobs/{job_id}/cancel")).json())

    async def retry(self, job_id: int) -> Job:
        return Job.model_validate((await self._call("POST", f"/jobs/{job_id}/retry")).json())

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
        schedule_id: int | None = None,
        workflow_id: int | None = None,
    ) -> list[Job]:
        """``GET /jobs``: newest first; ``before_id`` is the keyset cursor (the last id of a page)."""
        params = {
            "state": None if state is None else JobState(state).value,
            "queue": queue,
            "task": task,
            "cursor": None if before_id is None else str(before_id),
            "limit": limit,
            "schedule_id": schedule_id,
            "workflow_id": workflow_id,
        }
        response = await self._call("GET", "/jobs", params={k: v for k, v in params.items() if v is not None})
        return [Job.model_validate(item) for item in response.json()["items"]]

    # --- workflows -------------------------------------------------------------------------------

    async def start(self, workflow: Workflow) -> WorkflowInfo:
        """``POST /workflows``: checked by the service before anything is written (a problem is a
        :class:`WorkflowInvalid` naming the step); the workflow with its steps."""
        response = await self._call("POST", "/workflows", json=_workflow_body(workflow))
        return WorkflowInfo.model_validate(response.json())

    async def workflow(self, workflow_id: int) -> WorkflowInfo:
        return WorkflowInfo.model_validate((await self._call("GET", f"/workflows/{workflow_id}")).json())

    async def cancel_workflow(self, workflow_id: int) -> WorkflowInfo:
        response = await self._call("POST", f"/workflows/{workflow_id}/cancel")
        return WorkflowInfo.model_validate(response.json())

    async def retry_workflow(self, workflow_id: int) -> WorkflowInfo:
        response = await self._call("POST", f"/workflows/{workflow_id}/retry")
        return WorkflowInfo.model_validate(response.json())

    async def wait_for_workflow(self, workflow_id: int, timeout_s: float | None = 30) -> dict[str, Any]:
        """The workflow's result (its last steps' results by name) once it has succeeded, by long
        polls; as :meth:`skiplock.Client.wait_for_workflow`, :class:`WorkflowFailed` (``state``,
        the failed step as ``error``, ``result``), :class:`ResultTimeout`, :class:`WorkflowNotFound`."""
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        path = f"/workflows/{workflow_id}/result"
        while True:
            wait = max(0.0, min(MAX_WAIT_S, deadline - time.monotonic()))
            response = await self._call("GET", path, params={"wait": wait}, wait_s=wait)
            body = response.json()
            state = str(body["state"])
            if response.status_code == 200:
                result: dict[str, Any] = body.get("result") or {}
                if state == "succeeded":
                    return result
                error = FailedStep.model_validate(body["error"]) if body.get("error") else None
                why = "" if error is None else f": step {error.step!r} {error.state.value}"
                raise WorkflowFailed(
                    f"workflow {workflow_id} {state}{why}",
                    workflow_id=workflow_id,
                    state=state,
                    error=error,
                    result=result,
                )
            if time.monotonic() >= deadline:
                raise ResultTimeout(
                    f"workflow {workflow_id} is not final after {timeout_s} s",
                    workflow_id=workflow_id,
                    state=state,
                )
