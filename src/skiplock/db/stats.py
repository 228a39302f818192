"""Database health an operator needs to see: what holds back vacuum (the oldest open transaction,
the oldest snapshot, the oldest replication slot), how full the NOTIFY queue is, live and dead rows
and the last autovacuum per table. Read at most every few seconds; while the database does not
answer, the last read stays."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog

from skiplock.db.pool import DB_UNAVAILABLE_OR_TIMEOUT
from skiplock.db.sqlfile import Statement, load_statements
from skiplock.errors import str_of

log = structlog.get_logger("skiplock.db")


@dataclass(frozen=True, slots=True)
class StatsStatements:
    db_horizon: Statement
    db_table_tuples: Statement


SQL = load_statements(StatsStatements, "skiplock.db.sql", "stats.sql")


@dataclass(frozen=True, slots=True)
class TableRows:
    name: str
    live: int
    dead: int
    last_autovacuum: float | None  # Unix time; None: never


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    oldest_transaction_age_s: float = 0.0
    oldest_xmin_age: int = 0  # transactions
    oldest_slot_xmin_age: int = 0  # transactions
    notify_queue_usage: float = 0.0  # 0 to 1
    tables: tuple[TableRows, ...] = ()
    read_at: float = field(default=0.0, compare=False)  # monotonic; 0: never read


class DatabaseStatsReader:
    """``await reader.read()``: the stats, read afresh when the last read is older than
    ``max_age_s`` (so scrapes every second from many Prometheus servers cost one read)."""

    def __init__(self, pool: asyncpg.Pool, tables: Sequence[str], *, max_age_s: float = 5.0) -> None:
        self.pool = pool
        self.tables = list(tables)
        self.max_age_s = max_age_s
        self.last = DatabaseStats()

    async def read(self) -> DatabaseStats:
        """The freshest stats there are; never raises for a database that is away (the last
        read is returned, and its ``read_at`` says how old it is)."""
        now = time.monotonic()
        if self.last.read_at and now - self.last.read_at < self.max_age_s:
            return self.last
        try:
            async with self.pool.acquire(timeout=2) as conn:  # a starved pool must not hold a scrape
                horizon = await conn.fetchrow(SQL.db_horizon)
                rows = await conn.fetch(SQL.db_table_tuples, self.tables)
        except DB_UNAVAILABLE_OR_TIMEOUT as exc:
            log.warning("database_stats_stale", error=str_of(exc))
            return self.last
        assert horizon is not None  # one row, always
        self.last = DatabaseStats(
            oldest_transaction_age_s=float(horizon["transaction_age_s"]),
            oldest_xmin_age=int(horizon["xmin_age"]),
            oldest_slot_xmin_age=int(horizon["slot_xmin_age"]),
            notify_queue_usage=float(horizon["notify_usage"]),
            tables=tuple(TableRows(r["name"], r["live"], r["dead"], r["last_autovacuum"]) for r in rows),
            read_at=now,
        )
        return self.last
