"""Reading imports: one import with its counts, and its failed rows a page at a time."""

from __future__ import annotations

import asyncpg

from skiplock.errors import ImportNotFound
from skiplock.tasks.import_csv._statements import IMPORTS
from skiplock.tasks.import_csv.models import FailedRow, FailedRowPage, ImportInfo, ImportPage


async def get_import(pool: asyncpg.Pool, import_id: int) -> ImportInfo:
    record = await pool.fetchrow(IMPORTS.import_list, import_id, None, False, 1)
    if record is None:
        raise ImportNotFound(f"no import with id {import_id}")
    return ImportInfo.from_record(record)


async def list_imports(
    pool: asyncpg.Pool, *, before_id: int | None = None, with_failures: bool = False, limit: int = 50
) -> ImportPage:
    """Imports newest first, a keyset page at a time; only those with failed rows if asked."""
    records = await pool.fetch(IMPORTS.import_list, None, before_id, with_failures, limit)
    items = [ImportInfo.from_record(r) for r in records]
    return ImportPage(items=items, next_cursor=str(items[-1].id) if len(items) == limit else None)


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
