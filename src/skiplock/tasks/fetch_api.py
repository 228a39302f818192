"""fetch_api: GET JSON from an external API and upsert its items into ``records``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from skiplock.db.copy import copy_rows
from skiplock.db.storable import storable_text
from skiplock.errors import BadResponseError
from skiplock.fetcher import Fetcher
from skiplock.queue.context import Context
from skiplock.queue.tasks import task
from skiplock.tasks._statements import RECORDS


class FetchApiArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="An http or https URL answering JSON.")
    source: str = Field(min_length=1, max_length=200, description="Names the records' origin.")
    id_field: str = Field(default="id", min_length=1, max_length=200, description="Each item's key.")
    items_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Where an object answer keeps its array; unset: an object is one item.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with the request.")
    timeout_s: float = Field(default=30, gt=0, le=600, description="For the whole request.")


class FetchResult(BaseModel):
    source: str
    url: str
    fetched: int = Field(description="Items in the answer.")
    inserted: int
    updated: int
    skipped: int = Field(description="Items without a usable id (not objects, or no id_field).")


class Record(BaseModel):
    id: int
    source: str
    external_id: str
    payload: Any
    fetched_at: datetime


def extract_items(payload: Any, items_key: str | None) -> list[Any]:
    """The answer's items: an array as is, the array under ``items_key``, or one object."""
    if items_key is not None:
        if not isinstance(payload, dict) or items_key not in payload:
            raise BadResponseError(f"the answer has no {items_key!r} key", items_key=items_key)
        payload = payload[items_key]
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        return [payload]
    raise BadResponseError(f"expected a JSON array or object, got {type(payload).__name__}")


def keyed_items(items: list[Any], id_field: str) -> tuple[dict[str, Any], int]:
    """Items by their id as text (a later duplicate wins), and how many had no usable id."""
    keyed: dict[str, Any] = {}
    skipped = 0
    for item in items:
        key = item.get(id_field) if isinstance(item, dict) else None
        if isinstance(key, bool) or not isinstance(key, str | int | float) or key == "":
            skipped += 1
            continue
        # As stored: ids that differ only in what PostgreSQL cannot store are one record (the
        # later wins, as for any duplicate), not two rows one upsert would touch twice.
        keyed[storable_text(str(key))] = item
    return keyed, skipped


async def store_records(pool: asyncpg.Pool, source: str, keyed: dict[str, Any]) -> tuple[int, int]:
    """Upsert the items (COPY into a staging table, one INSERT … ON CONFLICT): (inserted, updated)."""
    if not keyed:
        return 0, 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(RECORDS.records_stage)
        await copy_rows(conn, "records_stage", ("external_id", "payload"), keyed.items())
        row = await conn.fetchrow(RECORDS.records_upsert_staged, source)
    assert row is not None
    return int(row["inserted"]), int(row["updated"])


async def fetch_records(http: Fetcher, pool: asyncpg.Pool, args: FetchApiArgs) -> FetchResult:
    """The whole fetch: GET, parse, upsert. Used by the task and by ``POST /fetch?mode=sync``."""
    answer = await http.get(str(args.url), headers=args.headers, timeout_s=args.timeout_s)
    items = extract_items(answer.json(), args.items_key)
    keyed, skipped = keyed_items(items, args.id_field)
    inserted, updated = await store_records(pool, args.source, keyed)
    return FetchResult(
        source=args.source,
        url=answer.url,
        fetched=len(items),
        inserted=inserted,
        updated=updated,
        skipped=skipped,
    )


async def list_records(pool: asyncpg.Pool, source: str | None, after_id: int, limit: int) -> list[Record]:
    rows = await pool.fetch(RECORDS.records_page, source, after_id, limit)
    return [Record.model_validate(dict(row)) for row in rows]


@task("fetch_api", args=FetchApiArgs, max_attempts=5)
async def fetch_api(ctx: Context, args: FetchApiArgs) -> dict[str, Any]:
    """GET JSON from ``url`` and upsert its items into records (by ``source`` and ``id_field``).
    5xx answers, timeouts and connection errors retry; 4xx and non-JSON answers fail at once."""
    await ctx.progress(0.0, f"fetching {args.url}")
    result = await fetch_records(ctx.http, ctx.pool, args)
    await ctx.progress(1.0, f"stored {result.inserted + result.updated} records")
    return result.model_dump()
