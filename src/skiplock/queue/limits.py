"""A queue's limits across replicas: per-process and global concurrency, and a rate limit (see
skiplock.rates), kept on the queue's row (migration 0017)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import asyncpg
import structlog

from skiplock.queue._statements import QUEUES
from skiplock.rates import Rate
from skiplock.settings import QueueSpec

log = structlog.get_logger("skiplock.limits")

MAX_CONCURRENCY = 10_000
MAX_GLOBAL_CONCURRENCY = 100_000


class QueueLimits(NamedTuple):
    """What a queue's row holds (None: not set)."""

    concurrency: int | None = None  # per process, overriding the workers' configured limit
    global_concurrency: int | None = None
    rate: Rate | None = None

    @property
    def limited(self) -> bool:
        """Claimed by job_claim_limited: a limit that only the claim across replicas can hold."""
        return self.global_concurrency is not None or self.rate is not None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> QueueLimits:
        rate = record["rate_limit"]
        return cls(
            record["concurrency"],
            record["global_concurrency"],
            Rate(rate, record["rate_period_s"]) if rate is not None else None,
        )


async def declare_queue_limits(pool: asyncpg.Pool, specs: Iterable[QueueSpec]) -> None:
    """The limits across replicas declared in SKIPLOCK_QUEUES, written where the queue has none of
    that kind yet: one set at runtime (PATCH) outlives restarts of workers declaring another, and
    a declaration that differs from what the database holds is logged, not applied."""
    for spec in specs:
        if spec.global_concurrency is None and spec.rate is None:
            continue
        rate = spec.rate
        async with pool.acquire() as conn:
            await conn.execute(
                QUEUES.queue_declare_limits,
                spec.name,
                None,
                spec.global_concurrency,
                None if rate is None else rate.limit,
                None if rate is None else rate.period_s,
                False,
                spec.global_concurrency is not None,
                rate is not None,
            )
            row = await conn.fetchrow(QUEUES.queue_limits, [spec.name])
        stored = QueueLimits() if row is None else QueueLimits.from_record(row)
        differs = (
            spec.global_concurrency is not None and stored.global_concurrency != spec.global_concurrency
        ) or (rate is not None and stored.rate != rate)
        if differs:
            log.warning(
                "queue_limits_declared_differ",
                queue=spec.name,
                declared_global_concurrency=spec.global_concurrency,
                declared_rate_limit=None if rate is None else str(rate),
                global_concurrency=stored.global_concurrency,
                rate_limit=None if stored.rate is None else str(stored.rate),
            )
