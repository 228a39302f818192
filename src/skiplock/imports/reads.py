"""Reading imports: one import with its counts, and its failed rows a page at a time."""

from __future__ import annotations

import asyncpg

from skiplock.errors import ImportNotFound
from skiplock.imports.models import FailedRow, FailedRowPage, ImportInfo
from skiplock.tasks._statements import IMPORTS


async def get_import(pool: asyncpg.Pool, import_id: int) -> ImportInfo:
    record = await pool.fetchrow(IMPORTS.import_get, import_id)
    if record is None:
        raise ImportNotFound(f"no import with id {import_id}")
    return ImportInfo.from_record(record)


async def failed_rows(
    pool: asyncpg.Pool, import_id: int, *, after_line: int = 0, limit: int = 100
) -> FailedRowPage:
    """Failed rows with ``line_no > after_line``, in line order; 404 for an unknown import."""
    records = await pool.fetch(IMPORTS.import_failed_rows, import_id, after_line, limit)
    if not records and not await pool.fetchval(IMPORTS.import_exists, import_id):
        raise ImportNotFound(f"no import with id {import_id}")
    items = [FailedRow(line_no=r["line_no"], raw=r["raw"], reason=r["reason"]) for r in records]
    next_cursor = str(items[-1].line_no) if len(items) == limit else None
    return FailedRowPage(items=items, next_cursor=next_cursor)
