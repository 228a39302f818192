"""GET /metrics: Litestar's Prometheus plugin (HTTP request metrics and the exposition), with the
queue gauges read from the database first (cheaply: at most every few seconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from litestar import Request, Response, get
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from skiplock import metrics
from skiplock.api.plugin import ClientDep, EngineDep
from skiplock.api.security import PUBLIC_ROUTE
from skiplock.db.pool import DB_UNAVAILABLE_OR_TIMEOUT
from skiplock.db.stats import DatabaseStatsReader

log = structlog.get_logger("skiplock.metrics")

DEPTH_MAX_AGE_S = 5.0
#: The tables skiplock's migrations create: their live and dead rows are on /metrics.
ENGINE_TABLES = (
    "jobs",
    "job_events",
    "queues",
    "schedules",
    "task_registrations",
    "imports",
    "import_chunks",
    "failed_rows",
    "items",
    "records",
    "pages",
    "api_keys",
)


def prometheus() -> PrometheusConfig:
    """HTTP metrics per route (templated paths, so ids do not explode the label set)."""
    return PrometheusConfig(
        app_name="skiplock", prefix="skiplock_http", group_path=True, exclude=[r"^/metrics$"]
    )


async def refresh_queue_gauges(client: ClientDep) -> None:
    """Depth gauges from the database; when it does not answer, the last values stay (and every
    process metric is still served: an outage is when they matter)."""
    try:
        queues = await client.queues(max_age_s=DEPTH_MAX_AGE_S)
    except DB_UNAVAILABLE_OR_TIMEOUT as exc:
        log.warning("queue_gauges_stale", error=str(exc) or type(exc).__name__)
        return
    metrics.queue_depth.clear()
    metrics.queue_oldest_age.clear()
    metrics.queue_unknown_task.clear()
    now = datetime.now(UTC)
    for queue in queues:
        for state, count in queue.counts.items():
            metrics.queue_depth.labels(queue.name, state.value).set(count)
        oldest = queue.oldest_queued_at
        metrics.queue_oldest_age.labels(queue.name).set((now - oldest).total_seconds() if oldest else 0)
        metrics.queue_unknown_task.labels(queue.name).set(queue.waiting_for_unknown_task)


async def refresh_database_gauges(request: Request[Any, Any, Any], engine: EngineDep) -> None:
    """The oldest transaction's age and rows per table, read at most every few seconds by one
    reader per app; the last values stay while the database does not answer."""
    reader: DatabaseStatsReader | None = request.app.state.get("database_stats")
    if reader is None or reader.pool is not engine.pool:
        reader = DatabaseStatsReader(engine.pool, ENGINE_TABLES, max_age_s=DEPTH_MAX_AGE_S)
        request.app.state.database_stats = reader
    stats = await reader.read()
    if not stats.read_at:
        return  # never read: no values rather than made-up zeros
    metrics.db_oldest_transaction_age.set(stats.oldest_transaction_age_s)
    for table in stats.tables:
        metrics.db_live_tuples.labels(table.name).set(table.live)
        metrics.db_dead_tuples.labels(table.name).set(table.dead)


class MetricsController(PrometheusController):
    opt = PUBLIC_ROUTE

    @get(include_in_schema=False)
    async def get(
        self, request: Request[Any, Any, Any], client: ClientDep, engine: EngineDep
    ) -> Response[bytes]:
        await refresh_queue_gauges(client)
        await refresh_database_gauges(request, engine)
        response: Response[bytes] = await super().get.fn(self)  # Litestar's exposition
        return response
