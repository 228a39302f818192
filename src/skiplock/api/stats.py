"""/stats: the per-minute rollup's series, what the dashboard's charts draw."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter

from skiplock.api.openapi import NEEDS_KEY
from skiplock.api.plugin import ClientDep
from skiplock.api.schemas import QUEUE_NAME, error_responses
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.queue.stats import StatsSeries, Window


class StatsController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/stats"
    tags = ["stats"]
    security = NEEDS_KEY

    @get(
        "/series",
        operation_id="GetStatsSeries",
        summary="Jobs finished, waits and depth over time",
        responses=error_responses(e400="A bad window or queue name (`detail` says which)."),
    )
    async def series(
        self,
        client: ClientDep,
        window: Annotated[
            Window, Parameter(description="1h: 60 steps of a minute; 1d: 144 steps of 10 minutes.")
        ] = "1h",
        queue: Annotated[
            str | None, Parameter(pattern=QUEUE_NAME, description="One queue; none: every queue together.")
        ] = None,
    ) -> StatsSeries:
        """Per step of the last hour or day, oldest first and every step present: the jobs that
        finished by outcome (succeeded, failed, cancelled), the p50 and p95 of their waits (due →
        started: run_at → started_at, within 9%) and the queue depth (queued jobs). Read from the
        per-minute rollup that housekeeping brings up to date every SKIPLOCK_STATS_INTERVAL_S (the
        current minute is partial), never from the jobs table."""
        return await client.stats.series(window, queue)
