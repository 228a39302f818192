"""Where the reads that may lag go: a read replica (SKIPLOCK_READ_DATABASE_URL) while it answers
and keeps up, else the primary.

Its lag is read at most every :data:`CHECK_INTERVAL_S`, by the first read after that (the others go
on with the last verdict meanwhile). A replica that is down (connecting fails, or a connection
breaks) or lags more than ``max_lag_s`` is left for the primary until a later check finds it fine;
each read sent to the primary instead counts in ``skiplock_read_fallbacks_total{reason}`` and the
changes of state are logged (``read_replica_down``, ``read_replica_lagging``, ``read_replica_back``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from skiplock import metrics
from skiplock.db.pool import DB_UNAVAILABLE_OR_TIMEOUT
from skiplock.db.sqlfile import Statement, load_statements
from skiplock.errors import str_of

log = structlog.get_logger("skiplock.db")

#: Seconds between two reads of the replica's lag (a read of a few microseconds on the standby).
CHECK_INTERVAL_S = 1.0
#: The longest wait for a replica's connection, and for its lag, before the primary serves.
CHECK_TIMEOUT_S = 1.0

Verdict = Literal["replica", "down", "lagging"]


@dataclass(frozen=True, slots=True)
class ReplicaStatements:
    replica_lag: Statement


SQL = load_statements(ReplicaStatements, "skiplock.db.sql", "replica.sql")


class ReadRoute:
    """``async with reads.acquire() as conn`` (and ``reads.fetch``): a connection of the replica or
    of ``primary``. Without a replica every read goes to ``primary``."""

    def __init__(
        self, primary: asyncpg.Pool, replica: asyncpg.Pool | None = None, *, max_lag_s: float = 10.0
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_s = max_lag_s
        self.verdict: Verdict = "replica"
        self.lag_s = 0.0
        self._checked_at = 0.0  # monotonic; 0: never
        self._checking: asyncio.Lock = asyncio.Lock()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[PoolConnectionProxy]:
        """A connection for a read that may lag (the replica's when it is fine, else the
        primary's). A replica's connection that breaks inside the block marks the replica down."""
        replica = await self._replica()
        async with AsyncExitStack() as stack:
            if replica is not None:
                try:
                    conn = await stack.enter_async_context(replica.acquire(timeout=CHECK_TIMEOUT_S))
                except DB_UNAVAILABLE_OR_TIMEOUT as exc:
                    self._set("down", error=str_of(exc))
                    metrics.read_fallbacks.labels("down").inc()
                else:
                    try:
                        yield conn
                    except DB_UNAVAILABLE_OR_TIMEOUT as exc:
                        if _unreachable(exc):
                            self._set("down", error=str_of(exc))
                        raise
                    return
            yield await stack.enter_async_context(self.primary.acquire())

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """``fetch`` on a read connection; a replica lost mid-read is read again on the primary."""
        try:
            async with self.acquire() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(query, *args)
                return rows
        except DB_UNAVAILABLE_OR_TIMEOUT as exc:
            if self.replica is None or not (_unreachable(exc) or _recovery_conflict(exc)):
                raise
            metrics.read_fallbacks.labels("down" if _unreachable(exc) else "conflict").inc()
            return await self.primary.fetch(query, *args)

    async def _replica(self) -> asyncpg.Pool | None:
        """The replica's pool when reads may go there now, checking its lag when that is due."""
        if self.replica is None:
            return None
        if time.monotonic() - self._checked_at >= CHECK_INTERVAL_S and not self._checking.locked():
            async with self._checking:
                await self._check(self.replica)
        if self.verdict == "replica":
            return self.replica
        metrics.read_fallbacks.labels(self.verdict).inc()
        return None

    async def _check(self, replica: asyncpg.Pool) -> None:
        self._checked_at = time.monotonic()
        try:
            async with replica.acquire(timeout=CHECK_TIMEOUT_S) as conn:
                lag_s = float(await conn.fetchval(SQL.replica_lag, timeout=CHECK_TIMEOUT_S))
        except DB_UNAVAILABLE_OR_TIMEOUT as exc:
            self._set("down", error=str_of(exc))
            return
        self.lag_s = lag_s
        metrics.read_replica_lag.set(lag_s)
        self._set("lagging" if lag_s > self.max_lag_s else "replica", lag_s=round(lag_s, 3))

    def _set(self, verdict: Verdict, **fields: object) -> None:
        if verdict == self.verdict:
            return
        if verdict == "replica":
            log.info("read_replica_back", was=self.verdict, **fields)
        else:
            log.warning(f"read_replica_{verdict}", max_lag_s=self.max_lag_s, **fields)
        self.verdict = verdict
        if verdict == "down":
            self._checked_at = time.monotonic()  # the next check a full interval later


def _unreachable(exc: BaseException) -> bool:
    """The replica is away (not a statement the replica refused, which the primary would too)."""
    return isinstance(
        exc, (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError)
    )


def _recovery_conflict(exc: BaseException) -> bool:
    """A standby cancelled the read for a conflict with what it replays (40001): the primary won't."""
    return isinstance(exc, asyncpg.TransactionRollbackError)
