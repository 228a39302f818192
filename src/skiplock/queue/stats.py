"""The charts' numbers, from the per-minute rollup (migration 0023, written by _rollup.py), never
from the jobs table: per step of a window, the jobs finished by outcome, their waits' p50 and p95
(due → started, read from the steps' wait buckets added up), and the queue depth."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
from pydantic import BaseModel, Field

from skiplock.db.replica import ReadRoute
from skiplock.queue._statements import STATS

Window = Literal["1h", "1d"]
#: A window's length and its step, in seconds.
WINDOWS: dict[str, tuple[int, int]] = {"1h": (3600, 60), "1d": (86_400, 600)}
#: A dashboard read of the rollup ends past this (a day of minutes is a few thousand rows).
STATS_TIMEOUT_S = 2.0


class StatsPoint(BaseModel):
    """One step of a series: what finished in it, how long those jobs waited, the queue depth."""

    at: datetime = Field(description="The step's start.")
    succeeded: int
    failed: int
    cancelled: int
    wait_p50_s: float | None = Field(
        description="Median wait (run_at → started_at) of the jobs that finished in the step, within"
        " 9%; null: none started."
    )
    wait_p95_s: float | None = Field(description="95th percentile of the same waits.")
    queued: int | None = Field(description="Queued jobs at the step's largest sample; null: not sampled.")


class StatsSeries(BaseModel):
    """A window of the per-minute rollup, oldest step first, every step present."""

    queue: str | None = Field(description="The queue, or null for every queue together.")
    window: Window
    step_s: int = Field(description="Seconds per point.")
    points: list[StatsPoint]


def bucket_value_s(bucket: int) -> float:
    """A wait bucket's value in seconds: the geometric middle of [2^(b/4), 2^((b+1)/4)) ms."""
    return float(2 ** ((bucket + 0.5) / 4) / 1000)


def percentile_s(buckets: Sequence[int], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q ≤ 1) of waits counted in ``buckets`` (ascending), None for none."""
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket, count in zip(buckets, counts, strict=True):
        seen += count
        if seen >= rank:
            return bucket_value_s(bucket)
    return bucket_value_s(buckets[-1])


class Stats:
    """Read series of the rollup (the dashboard's charts and GET /stats/series)."""

    def __init__(self, pool: asyncpg.Pool | ReadRoute) -> None:
        self.pool = pool

    async def series(
        self, window: Window = "1h", queue: str | None = None, *, now: datetime | None = None
    ) -> StatsSeries:
        """The window up to ``now`` (default: the clock), every step present (zero when nothing
        finished), under a ``statement_timeout`` of :data:`STATS_TIMEOUT_S`."""
        length, step = WINDOWS[window]
        now = now or datetime.now(UTC)
        last = datetime.fromtimestamp(now.timestamp() // step * step, UTC)
        first = last - timedelta(seconds=length - step)
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(STATS.stats_timeout, round(STATS_TIMEOUT_S * 1000))
            rows = await conn.fetch(STATS.stats_series, first, last + timedelta(seconds=step), queue, step)
        by_step = {r["step"]: r for r in rows}
        points = []
        for n in range(length // step):
            at = first + timedelta(seconds=n * step)
            r = by_step.get(at)
            if r is None:
                points.append(
                    StatsPoint(
                        at=at,
                        succeeded=0,
                        failed=0,
                        cancelled=0,
                        wait_p50_s=None,
                        wait_p95_s=None,
                        queued=None,
                    )
                )
                continue
            points.append(
                StatsPoint(
                    at=at,
                    succeeded=r["succeeded"],
                    failed=r["failed"],
                    cancelled=r["cancelled"],
                    wait_p50_s=percentile_s(r["wait_buckets"], r["wait_counts"], 0.5),
                    wait_p95_s=percentile_s(r["wait_buckets"], r["wait_counts"], 0.95),
                    queued=r["queued"],
                )
            )
        return StatsSeries(queue=queue, window=window, step_s=step, points=points)
