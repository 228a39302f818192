"""Writers that met a row another transaction had just moved to another partition.

``jobs`` is partitioned by state (migration 0028): an UPDATE that ends a job moves its row from
``jobs_live`` to ``jobs_done``. A statement that waited for that row's lock (a heartbeat behind
the outcome of one of its jobs, a cancel behind the job's end) then fails with a serialization
failure, "tuple to be locked was already moved to another partition due to concurrent update",
where an UPDATE within one table would have gone on with the row's new version (a ``FOR UPDATE
SKIP LOCKED`` whose snapshot still saw the row before the move committed gets it too, instead of
skipping the row). Run again, the statement finds the row where it is now. :class:`Connection`
does that for every statement run outside a transaction; :func:`retry_moved` for a whole
transaction, which its caller writes as a function.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

ATTEMPTS = 20  # each retry follows a move that committed: an endless run of them is not a race


def row_moved(exc: BaseException) -> bool:
    """``exc`` is the failure of a statement that waited on a row moved to another partition: a
    serialization failure (40001), which under READ COMMITTED, the engine's isolation, nothing
    else raises (matched by its code, not its message, which lc_messages may translate)."""
    return isinstance(exc, asyncpg.SerializationError)


async def retry_moved(op: Callable[[], Awaitable[T]], attempts: int = ATTEMPTS) -> T:
    """``op()``, run again while it fails only because a row it waited on was moved."""
    for attempt in range(1, attempts + 1):
        try:
            return await op()
        except asyncpg.SerializationError as exc:
            if not row_moved(exc) or attempt == attempts:
                raise
        await asyncio.sleep(0)
    raise AssertionError("unreachable")


class Connection(asyncpg.Connection):
    """asyncpg's connection, whose statements run outside a transaction are run again when a row
    they waited on was moved (see the module's docstring); in a transaction, the caller retries."""

    async def _statement(self, op: Callable[[], Awaitable[T]]) -> T:
        return await (op() if self.is_in_transaction() else retry_moved(op))

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        return await self._statement(lambda: super(Connection, self).execute(query, *args, **kwargs))

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        return await self._statement(lambda: super(Connection, self).fetch(query, *args, **kwargs))

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._statement(lambda: super(Connection, self).fetchrow(query, *args, **kwargs))

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._statement(lambda: super(Connection, self).fetchval(query, *args, **kwargs))
