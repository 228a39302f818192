"""POST /jobs/bulk: retry, cancel or delete many jobs at once, by a job of its own."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from pydantic import BaseModel, ConfigDict, Field, model_validator

from skiplock.api.errors import validation_as_422
from skiplock.api.openapi import NEEDS_KEY, documented
from skiplock.api.plugin import ClientDep
from skiplock.api.schemas import error_responses
from skiplock.api.security import needs
from skiplock.auth import Principal, Scope
from skiplock.queue.bulk import MAX_BULK, BulkAction, BulkStarted, JobFilter

#: The most ids a request may name (a filter reaches MAX_BULK): they travel in the bulk job's args.
MAX_IDS = 10_000

JobIdItem = Annotated[int, Field(ge=1, le=2**63 - 1)]

EXAMPLES = {
    "cancel by filter": {"action": "cancel", "filter": {"state": "queued", "task": "sleep"}},
    "retry these": {"action": "retry", "ids": [41, 42]},
    "delete failed by error": {"action": "delete", "filter": {"state": "failed", "error": "TimeoutError"}},
}


class BulkRequest(BaseModel):
    """The action, and either the jobs' ids or a filter (GET /jobs' fields, args and error too)."""

    model_config = ConfigDict(extra="forbid")

    action: BulkAction = Field(
        description="retry (failed or cancelled jobs), cancel, or delete (finished jobs)."
    )
    ids: list[JobIdItem] | None = Field(default=None, min_length=1, max_length=MAX_IDS)
    filter: JobFilter | None = Field(
        default=None, description=f"Every job it matches, the newest {MAX_BULK:,}."
    )

    @model_validator(mode="after")
    def _ids_or_filter(self) -> BulkRequest:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give ids or filter, one of them")
        return self


class BulkCount(BaseModel):
    matched: int = Field(description=f"Jobs the filter matches now, at most {MAX_BULK:,}.")


class BulkController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/jobs/bulk"
    tags = ["jobs"]
    security = NEEDS_KEY
    exception_handlers = {ValidationException: validation_as_422}

    @post(
        "/",
        opt=needs(Scope.JOBS_WRITE),
        operation_id="BulkJobs",
        summary="Retry, cancel or delete many jobs",
        status_code=HTTP_202_ACCEPTED,
        response_description="The bulk job and how many jobs it acts on.",
        responses=error_responses(
            body=True,
            e422="A bad action, ids or filter, both or neither (`extra` names the field): nothing is "
            "written.",
            e403="The key lacks jobs:write, or the action is delete and it lacks admin.",
            e409="No live worker serves the queue bulk_jobs runs in (default), or it is paused: the "
            "job would never run, so none is made.",
            e503="Counting the filter's jobs ran past its limit, or the database is unavailable: narrow it.",
        ),
        operation_class=documented(examples=EXAMPLES),
        description=(
            "202 with the id of a `bulk_jobs` job that applies the action a batch of 1,000 at a time, "
            "each batch one transaction, and how many jobs were matched now (a filter takes the "
            f"newest {MAX_BULK:,}; ids at most {MAX_IDS:,}). Each write is guarded by state as the "
            "single actions are: retry takes failed and cancelled jobs that are no workflow's step, "
            "cancel waiting, queued and running ones, delete finished ones (a workflow's steps only "
            "once their workflow ended); a job that changed meanwhile, or finished (retry, delete) or "
            "was created (cancel) after the request, is skipped and counted. The "
            "bulk job's progress is the share walked, its result `{matched, done, skipped}`. Retry "
            "and cancel need `jobs:write`; delete needs `admin` (no single job is deleted over the API). "
            "409 when no live worker serves the bulk job's queue (`default`) or it is paused."
        ),
    )
    async def bulk(
        self, data: JSONBody[BulkRequest], client: ClientDep, request: Request[Any, Any, Any]
    ) -> BulkStarted:
        """Retry, cancel or delete the jobs named or matched, by a job of its own."""
        if data.action == "delete":
            principal = request.scope.get("user")
            if isinstance(principal, Principal) and not principal.allows(Scope.ADMIN):
                raise PermissionDeniedException(
                    "a bulk delete needs the 'admin' scope", extra={"scope": Scope.ADMIN}
                )
        return await client.bulk(data.action, ids=data.ids, where=data.filter)

    @post(
        "/count",
        operation_id="CountBulkJobs",
        summary="Count the jobs a filter matches",
        status_code=HTTP_200_OK,
        response_description="How many jobs POST /jobs/bulk would act on now.",
        responses=error_responses(
            body=True,
            e422="A bad filter (`extra` names the field).",
            e503="Counting ran past its limit, or the database is unavailable: narrow the filter.",
        ),
        description=f"What a bulk action's confirmation shows: the jobs the filter matches now (at most "
        f"{MAX_BULK:,}, the newest). Nothing is written.",
    )
    async def count(self, data: JSONBody[JobFilter], client: ClientDep) -> BulkCount:
        """The jobs a filter matches now, at most 100,000."""
        return BulkCount(matched=await client.count_matching(data))
