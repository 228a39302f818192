"""Batched writes that one bad item cannot hold up.

A batch the server refuses for its values (a constraint, a trigger, a value it cannot store) is
split in halves, each written the same way, until every refused item is alone; everything else
is written. Only a database that is unavailable (``is_unavailable``) stops the split: the caller
keeps what is left and retries it later as a whole. With k bad items among n, a refused batch
costs about 2·k·log2(n) more statements; a good one costs nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg
import structlog

from skiplock import metrics
from skiplock.db.moved import row_moved
from skiplock.db.pool import AnyConnection, encode_json, is_unavailable
from skiplock.queue._running import JobEvent
from skiplock.queue._statements import EVENTS
from skiplock.service import str_of

log = structlog.get_logger("skiplock.events")

T = TypeVar("T")


def refused_for_values(exc: BaseException) -> bool:
    """True when retrying the same items would fail the same way: the server refused them, or
    the driver could not encode an argument (asyncpg's client-side DataError, an InterfaceError
    that ``is_unavailable`` counts as the connection's fault). Not a row another transaction moved
    meanwhile (see skiplock.db.moved): written again, the same items go through."""
    if row_moved(exc):
        return False
    return not is_unavailable(exc) or (
        isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)
    )


async def write_isolating(
    items: Sequence[T],
    write: Callable[[Sequence[T]], Awaitable[None]],
    refused: Callable[[T, Exception], Awaitable[None]],
) -> None:
    """``write(items)``; when the server refuses it for its values, the same for each half, until
    a refused item is alone: it goes to ``refused(item, error)``. An unavailable database raises."""
    if not items:
        return
    try:
        await write(items)
    except Exception as exc:
        if not refused_for_values(exc):
            raise
        if len(items) == 1:
            await refused(items[0], exc)
            return
        middle = len(items) // 2
        await write_isolating(items[:middle], write, refused)
        await write_isolating(items[middle:], write, refused)


async def write_events(conn: AnyConnection | asyncpg.Pool, events: Sequence[JobEvent], owner: str) -> None:
    """Progress and log events of jobs ``owner`` runs, in one statement; an event of an attempt
    that is no longer ours is not written."""
    job_ids, attempts, kinds, data = zip(*events, strict=True)
    await conn.execute(
        EVENTS.event_write_many,
        list(job_ids),
        list(kinds),
        [encode_json(d) for d in data],
        list(attempts),
        owner,
    )


async def write_events_isolating(conn: AnyConnection, events: Sequence[JobEvent], owner: str) -> int:
    """Write ``events`` inside the caller's transaction, each try under a savepoint, dropping (with
    a log line and a count) each one the server refuses; returns how many were dropped. An
    unavailable database raises, and the caller's transaction then holds none of them."""
    dropped = 0

    async def write(chunk: Sequence[JobEvent]) -> None:
        async with conn.transaction():  # a savepoint: a refusal undoes only this chunk
            await write_events(conn, chunk, owner)

    async def drop(event: JobEvent, exc: Exception) -> None:
        nonlocal dropped
        dropped += 1
        metrics.events_dropped.inc()
        job_id, _, kind, _ = event
        log.warning("job_event_dropped", job_id=job_id, kind=kind, error=str_of(exc), reason="refused")

    await write_isolating(events, write, drop)
    return dropped
