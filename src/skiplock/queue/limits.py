"""A queue's limits across replicas: per-process and global concurrency, a rate limit (see
skiplock.rates), and a concurrency and a rate per concurrency key value, kept on the queue's row
(migrations 0017, 0019)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg
import structlog

from skiplock.errors import ConfigError
from skiplock.queue._statements import QUEUES
from skiplock.rates import Rate
from skiplock.settings import QueueSpec

if TYPE_CHECKING:
    from skiplock.queue.tasks import Task

log = structlog.get_logger("skiplock.limits")

MAX_CONCURRENCY = 10_000
MAX_GLOBAL_CONCURRENCY = 100_000


class QueueLimits(NamedTuple):
    """What a queue's row holds (None: not set)."""

    concurrency: int | None = None  # per process, overriding the workers' configured limit
    global_concurrency: int | None = None
    rate: Rate | None = None
    key_concurrency: int | None = None  # jobs running at once per concurrency key value
    key_rate: Rate | None = None  # starts per concurrency key value

    @property
    def limited(self) -> bool:
        """Claimed by job_claim_limited or job_claim_keyed: a limit only the claim across replicas holds."""
        return self.global_concurrency is not None or self.rate is not None or self.keyed

    @property
    def keyed(self) -> bool:
        """Claimed by job_claim_keyed: a limit per concurrency key value."""
        return self.key_concurrency is not None or self.key_rate is not None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> QueueLimits:
        rate, key_rate = record["rate_limit"], record["key_rate_limit"]
        return cls(
            record["concurrency"],
            record["global_concurrency"],
            Rate(rate, record["rate_period_s"]) if rate is not None else None,
            record["key_concurrency"],
            Rate(key_rate, record["key_rate_period_s"]) if key_rate is not None else None,
        )


class KeyLimits(NamedTuple):
    """Per-key limits declared for a queue (by SKIPLOCK_QUEUES or a task's ``@task``)."""

    concurrency: int | None = None
    rate: Rate | None = None


async def _declare(
    pool: asyncpg.Pool,
    queue: str,
    global_concurrency: int | None,
    rate: Rate | None,
    keys: KeyLimits,
) -> QueueLimits:
    """Write the declared limits where the queue has none of that kind; what it holds then."""
    async with pool.acquire() as conn:
        await conn.execute(
            QUEUES.queue_declare_limits,
            queue,
            None,
            global_concurrency,
            None if rate is None else rate.limit,
            None if rate is None else rate.period_s,
            False,
            global_concurrency is not None,
            rate is not None,
            keys.concurrency,
            None if keys.rate is None else keys.rate.limit,
            None if keys.rate is None else keys.rate.period_s,
            keys.concurrency is not None,
            keys.rate is not None,
        )
        row = await conn.fetchrow(QUEUES.queue_limits, [queue])
    return QueueLimits() if row is None else QueueLimits.from_record(row)


def task_key_limits(tasks: Iterable[Task[Any]]) -> dict[str, KeyLimits]:
    """The per-key limits the tasks declare, by queue; two tasks of one queue declaring different
    ones are a ConfigError (the limits are the queue's)."""
    declared: dict[str, tuple[str, KeyLimits]] = {}
    for item in tasks:
        keys = KeyLimits(item.key_concurrency, item.key_rate)
        if keys == KeyLimits():
            continue
        first = declared.setdefault(item.queue, (item.name, keys))
        if first[1] != keys:
            raise ConfigError(
                f"tasks {first[0]!r} and {item.name!r} declare different per-key limits for queue "
                f"{item.queue!r}: per-key limits are the queue's"
            )
    return {queue: keys for queue, (_, keys) in declared.items()}


async def declare_key_limits(pool: asyncpg.Pool, declared: dict[str, KeyLimits]) -> None:
    """Per-key limits declared on tasks (``@task(key_concurrency=…, key_rate_limit=…)``), by queue,
    written where the queue has none of that kind yet, as SKIPLOCK_QUEUES' limits are."""
    for queue, keys in sorted(declared.items()):
        stored = await _declare(pool, queue, None, None, keys)
        if (keys.concurrency is not None and stored.key_concurrency != keys.concurrency) or (
            keys.rate is not None and stored.key_rate != keys.rate
        ):
            log.warning(
                "queue_limits_declared_differ",
                queue=queue,
                declared_key_concurrency=keys.concurrency,
                declared_key_rate_limit=None if keys.rate is None else str(keys.rate),
                key_concurrency=stored.key_concurrency,
                key_rate_limit=None if stored.key_rate is None else str(stored.key_rate),
            )


async def declare_queue_limits(pool: asyncpg.Pool, specs: Iterable[QueueSpec]) -> None:
    """The limits across replicas declared in SKIPLOCK_QUEUES, written where the queue has none of
    that kind yet: one set at runtime (PATCH) outlives restarts of workers declaring another, and
    a declaration that differs from what the database holds is logged, not applied."""
    for spec in specs:
        if spec.global_concurrency is None and spec.rate is None:
            continue
        rate = spec.rate
        stored = await _declare(pool, spec.name, spec.global_concurrency, rate, KeyLimits())
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
