"""GET /metrics: Litestar's Prometheus plugin (HTTP request metrics and the exposition), with the
queue gauges read from the database first (cheaply: at most every few seconds)."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from litestar import Response, get
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from skiplock import metrics
from skiplock.api.plugin import ClientDep
from skiplock.api.security import PUBLIC_ROUTE
from skiplock.db.pool import DB_UNAVAILABLE_OR_TIMEOUT

log = structlog.get_logger("skiplock.metrics")

DEPTH_MAX_AGE_S = 5.0


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


class MetricsController(PrometheusController):
    opt = PUBLIC_ROUTE

    @get(include_in_schema=False)
    async def get(self, client: ClientDep) -> Response[bytes]:
        await refresh_queue_gauges(client)
        response: Response[bytes] = await super().get.fn(self)  # Litestar's exposition
        return response
