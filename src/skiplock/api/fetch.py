"""/fetch (the external-API fetch, inline or as a job) and /records (what it stored)."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Response, get, post
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from pydantic import BaseModel

from skiplock.api.errors import validation_as_422
from skiplock.api.openapi import NEEDS_KEY, documented
from skiplock.api.plugin import ClientDep, EngineDep
from skiplock.api.schemas import error_responses
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.queue.models import Job
from skiplock.tasks.fetch_api import FetchApiArgs, FetchResult, Record, fetch_records, list_records

FETCH_EXAMPLE = {"url": "http://api.example.com/items", "source": "example", "items_key": "items"}


class RecordPage(BaseModel):
    items: list[Record]
    next_cursor: str | None


class FetchController(Controller):
    opt = needs(Scope.JOBS_WRITE)
    path = "/fetch"
    tags = ["fetch"]
    security = NEEDS_KEY
    exception_handlers = {ValidationException: validation_as_422}

    @post(
        "/",
        operation_id="Fetch",
        summary="Fetch an external JSON API into records",
        status_code=HTTP_202_ACCEPTED,
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(
                Job, description="mode=task: the fetch_api job enqueued.", generate_examples=False
            ),
            HTTP_200_OK: ResponseSpec(
                FetchResult, description="mode=sync: what was fetched and stored.", generate_examples=False
            ),
            **error_responses(
                body=True,
                e422="Bad arguments, or a URL that may not be fetched (private, or not an allowed host).",
                e502="mode=sync: the upstream failed; `detail` says how.",
                e504="mode=sync: the upstream did not answer within timeout_s.",
            ),
        },
        operation_class=documented(examples={"items": FETCH_EXAMPLE}),
        description=(
            "mode=task (the default): 202 with the fetch_api job. mode=sync: 200 with the result, "
            "502 with the upstream's reason, 504 when it did not answer within timeout_s, "
            "422 for bad arguments or a URL that may not be fetched."
        ),
    )
    async def fetch(
        self,
        data: JSONBody[FetchApiArgs],
        engine: EngineDep,
        client: ClientDep,
        mode: Annotated[Literal["sync", "task"], Parameter(description="Run now or enqueue.")] = "task",
    ) -> Response[FetchResult | Job]:
        """Fetch JSON from an external API and upsert its items into records."""
        if mode == "task":
            job = await client.enqueue("fetch_api", data.model_dump(mode="json"))
            return Response(job, status_code=HTTP_202_ACCEPTED)
        result = await fetch_records(engine.http, engine.pool, data)
        return Response(result, status_code=HTTP_200_OK)


class RecordController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/records"
    tags = ["fetch"]
    security = NEEDS_KEY

    @get("/", operation_id="ListRecords", summary="List stored records", responses=error_responses())
    async def records(
        self,
        engine: EngineDep,
        source: Annotated[str | None, Parameter(min_length=1, max_length=200)] = None,
        cursor: Annotated[
            int | None, Parameter(ge=0, le=2**63 - 1, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> RecordPage:
        """Stored records in the order they were first stored, optionally of one source."""
        records = await list_records(engine.pool, source, cursor or 0, limit)
        next_cursor = str(records[-1].id) if len(records) == limit else None
        return RecordPage(items=records, next_cursor=next_cursor)
