"""A queue's limits across replicas: per-process and global concurrency, and a rate limit.

A rate is written ``"<count>/<unit>"`` (``"100/minute"``, ``"5/second"``; units ``second``,
``minute``, ``hour``, ``day``): at most ``count`` starts of the queue's jobs in any window of one
unit, across every process (a sliding window, not buckets).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import asyncpg

#: The rate's units, in seconds.
UNITS: dict[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
#: Kept below the schema's bounds (migration 0017): the claim keeps one start per place of a rate.
MAX_RATE = 10_000
MAX_CONCURRENCY = 10_000
MAX_GLOBAL_CONCURRENCY = 100_000

_RATE = re.compile(r"([0-9]+)/([a-z]+)")


class Rate(NamedTuple):
    limit: int  # starts per period
    period_s: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"100/minute"`` → ``Rate(100, 60.0)``; anything else is a ValueError saying why."""
        match = _RATE.fullmatch(text.strip().lower())
        if match is None or match[2] not in UNITS:
            raise ValueError(f"a rate is '<count>/<unit>', unit one of {', '.join(UNITS)}: not {text!r}")
        count = int(match[1])
        if not 1 <= count <= MAX_RATE:
            raise ValueError(f"a rate's count must be between 1 and {MAX_RATE}: not {text!r}")
        return cls(count, UNITS[match[2]])

    def __str__(self) -> str:
        unit = next((name for name, seconds in UNITS.items() if seconds == self.period_s), None)
        return f"{self.limit}/{unit}" if unit else f"{self.limit}/{self.period_s:g}s"


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
