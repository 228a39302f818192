"""/imports: upload a CSV (spooled, then stored in one short transaction), read an import, its failed rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.openapi.spec import RequestBody
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

from skiplock.api.openapi import NEEDS_KEY, documented, media
from skiplock.api.plugin import ClientDep, EngineDep
from skiplock.api.schemas import error_responses, parse_cursor
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.errors import BusyError
from skiplock.tasks.import_csv import (
    FailedRowPage,
    ImportCreated,
    ImportInfo,
    ImportPage,
    failed_rows,
    get_import,
    list_imports,
    store_upload,
)

ImportId = Annotated[str, Parameter(pattern=r"^[1-9][0-9]{0,17}$", description="The import's id.")]


_CSV = "email,name\nada@example.com,Ada\ngrace@example.com,Grace\n"
_CSV_TEXT = {"type": "string", "description": "The CSV file, UTF-8, a header row first."}
UPLOAD_BODY = RequestBody(
    required=True,
    description="The CSV as the body, or as a multipart/form-data file (the field named 'file', else "
    "the first part with a filename).",
    content={
        "text/csv": media(_CSV_TEXT, people=_CSV),
        "application/csv": media(_CSV_TEXT),
        "text/plain": media(_CSV_TEXT),
        "multipart/form-data": media(
            {
                "type": "object",
                "properties": {"file": {"type": "string", "contentMediaType": "text/csv"}},
                "required": ["file"],
            }
        ),
    },
)
_NO_IMPORT = "No import has this id."

#: How long an upload waits for one of the slots before it is refused with 503.
UPLOAD_WAIT_S = 2.0


@asynccontextmanager
async def upload_slot(slots: asyncio.Semaphore) -> AsyncIterator[None]:
    """One of the uploads a process takes at once (each spools its body to a temporary file, then
    holds a pooled connection while it writes it: slow clients must not take the disk or the pool)."""
    try:
        async with asyncio.timeout(UPLOAD_WAIT_S):
            await slots.acquire()
    except TimeoutError:
        raise BusyError("too many uploads in progress; retry shortly") from None
    try:
        yield
    finally:
        slots.release()


class ImportController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/imports"
    tags = ["imports"]
    security = NEEDS_KEY

    @post(
        "/",
        opt=needs(Scope.ADMIN),
        operation_id="CreateImport",
        summary="Upload a CSV to import",
        status_code=HTTP_202_ACCEPTED,
        response_description="The import and its import_csv job, committed.",
        responses=error_responses(
            e400="An empty upload, a multipart body without a file or malformed, or a bad parameter.",
            e408="The client stopped sending the body for longer than SKIPLOCK_UPLOAD_BODY_TIMEOUT_S.",
            e413="The upload is larger than SKIPLOCK_IMPORT_MAX_BYTES.",
            e415="Not text/csv, application/csv, text/plain or multipart/form-data, or not UTF-8.",
            e503="Too many uploads in progress, or the database is unavailable: retry after Retry-After.",
        ),
        operation_class=documented(UPLOAD_BODY),
        # The app-wide cap is for JSON bodies; uploads are capped by SKIPLOCK_IMPORT_MAX_BYTES, below.
        request_max_body_size=None,
        description=(
            "The CSV as the body (text/csv, application/csv or text/plain, UTF-8) or as a "
            "multipart/form-data file (the field named 'file', else the first part with a filename). "
            "202 once the file and its import_csv job are committed; 413 beyond SKIPLOCK_IMPORT_MAX_BYTES, "
            "415 for other content types, 400 for an empty upload or a multipart body without a file."
        ),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        client: ClientDep,
        engine: EngineDep,
        filename: Annotated[
            str | None, Parameter(max_length=1000, description="Name kept with a text/csv upload.")
        ] = None,
    ) -> ImportCreated:
        """Store a CSV upload without holding it in memory and enqueue the job that loads it."""
        async with upload_slot(request.app.state.upload_slots):
            return await store_upload(
                client,
                request.stream(),
                content_type=request.headers.get("content-type"),
                content_length=request.content_length,
                filename=filename,
                max_bytes=engine.settings.import_max_bytes,
                idle_timeout_s=engine.settings.upload_body_timeout_s,
            )

    @get("/", operation_id="ListImports", summary="List imports", responses=error_responses())
    async def list_imports(
        self,
        client: ClientDep,
        with_failures: Annotated[bool, Parameter(description="Only imports with failed rows.")] = False,
        cursor: Annotated[
            int | None, Parameter(ge=1, le=2**63 - 1, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> ImportPage:
        """Imports newest first, with their state and counts."""
        return await list_imports(client.pool, before_id=cursor, with_failures=with_failures, limit=limit)

    @get(
        "/{import_id:str}",
        operation_id="GetImport",
        summary="Get an import",
        responses=error_responses(e404=_NO_IMPORT),
    )
    async def get_import(self, import_id: ImportId, client: ClientDep) -> ImportInfo:
        """The import: state, rows read, loaded and failed so far, and its job."""
        return await get_import(client.pool, int(import_id))

    @get(
        "/{import_id:str}/failed-rows",
        operation_id="ListFailedRows",
        summary="List an import's failed rows",
        responses=error_responses(e404=_NO_IMPORT),
    )
    async def failed_rows(
        self,
        import_id: ImportId,
        client: ClientDep,
        cursor: Annotated[
            str | None, Parameter(max_length=20, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> FailedRowPage:
        """Rows that did not load, by line number, with the raw text and the reason."""
        return await failed_rows(
            client.pool, int(import_id), after_line=parse_cursor(cursor, below=2**31) or 0, limit=limit
        )
