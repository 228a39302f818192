"""What the imports API returns: the import, its failed rows, and the answer to an upload."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from skiplock.queue.models import Job


class ImportInfo(BaseModel):
    """An import: its job, its state and its counts so far (``rows = loaded + failed``)."""

    id: int
    job_id: int | None
    filename: str | None
    bytes: int = Field(description="Size of the uploaded CSV.")
    state: str = Field(description="queued, running, succeeded, failed or cancelled.")
    rows: int = Field(description="Records read so far (blank lines and the header not counted).")
    loaded: int = Field(description="Valid rows upserted into items.")
    failed: int = Field(description="Rows written to failed_rows.")
    error: str | None = Field(description="Why the import (not a row) failed, if it did.")
    progress: dict[str, Any] | None = Field(description="The job's latest progress report.")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> ImportInfo:
        return cls.model_validate(dict(record))


class ImportPage(BaseModel):
    """Imports newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[ImportInfo]
    next_cursor: str | None


class FailedRow(BaseModel):
    """A row that did not load: the file line it starts on, its text, and why."""

    line_no: int
    raw: str
    reason: str


class FailedRowPage(BaseModel):
    """Failed rows by line number; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[FailedRow]
    next_cursor: str | None


class ImportCreated(BaseModel):
    """The stored upload and the job that will load it."""

    import_id: int
    job: Job
