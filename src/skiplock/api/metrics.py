"""GET /metrics: Litestar's Prometheus plugin (HTTP request metrics and the exposition), with the
queue gauges read from the database first (cheaply: at most every few seconds)."""

from __future__ import annotations

import time
import typing
from datetime import UTC, datetime
from typing import Any, get_args

import structlog
from litestar import Litestar, Request, Response, get
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController, PrometheusMiddleware
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import Message, Receive, Scope, Send

from skiplock import metrics
from skiplock.api.plugin import ClientDep, EngineDep
from skiplock.api.security import PUBLIC_ROUTE
from skiplock.db.pool import DB_UNAVAILABLE_OR_TIMEOUT
from skiplock.db.stats import DatabaseStats, DatabaseStatsReader
from skiplock.queue.engine import Engine
from skiplock.queue.models import QueueLimitsInfo, WaitingOn
from skiplock.queue.workers import Role, served_by
from skiplock.rates import Rate

WAITING_REASONS: tuple[WaitingOn, ...] = typing.get_args(WaitingOn)

log = structlog.get_logger("skiplock.metrics")

DEPTH_MAX_AGE_S = 5.0
#: The tables skiplock's migrations create: their live and dead rows are on /metrics (a partitioned
#: one's summed over its partitions; jobs_live, the claim's, and jobs_done, the history, also apart).
ENGINE_TABLES = (
    "jobs",
    "jobs_live",
    "jobs_done",
    "job_events",
    "queues",
    "queue_key_starts",
    "schedules",
    "task_registrations",
    "workflows",
    "job_deps",
    "workers",
    "imports",
    "import_chunks",
    "failed_rows",
    "items",
    "records",
    "pages",
    "api_keys",
)


class RequestMetrics(PrometheusMiddleware):
    """Litestar's HTTP metrics (same names, labels and values) with each label set's children
    looked up once: ``labels()`` validates and locks on every call, a few percent of a request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._done: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._open: dict[tuple[str, str], Any] = {}

    def _in_progress(self, method: str, path: str) -> Any:
        child = self._open.get((method, path))
        if child is None:
            labels = self._labels(method, path, 200)  # Litestar's in-progress label set
            child = self._open[method, path] = self.requests_in_progress(labels).labels(*labels.values())
        return child

    def _finished(self, method: str, path: str, status: int) -> tuple[Any, Any]:
        """The request count and duration children of one label set."""
        children = self._done.get((method, path, status))
        if children is None:
            labels = self._labels(method, path, status)
            values = list(labels.values())
            children = (self.request_count(labels).labels(*values), self.request_time(labels).labels(*values))
            self._done[method, path, status] = children
        return children

    def _labels(self, method: str, path: str, status: int) -> dict[str, str | int | float]:
        return {"method": method, "path": path, "status_code": status, "app_name": self._config.app_name}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "")) if scope["type"] == ScopeType.HTTP else str(scope["type"])
        path = scope["path_template"] if self._config.group_path else scope["path"]
        started = time.perf_counter()
        span = [200, 0.0]  # status, duration to the last body message

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                span[0] = message["status"]
            elif message["type"] == "http.response.body":
                span[1] = time.perf_counter() - started
            await send(message)

        in_progress = self._in_progress(method, path)
        in_progress.inc()
        try:
            await self.app(scope, receive, send_timed)
        finally:
            in_progress.dec()
            status = int(span[0])
            count, duration = self._finished(method, path, status)
            if status >= HTTP_500_INTERNAL_SERVER_ERROR:  # rare: looked up each time, as before
                labels = self._labels(method, path, status)
                self.requests_error_count(labels).labels(*labels.values()).inc()
            count.inc()
            duration.observe(span[1])


def prometheus() -> PrometheusConfig:
    """HTTP metrics per route (templated paths, so ids do not explode the label set)."""
    return PrometheusConfig(
        app_name="skiplock",
        prefix="skiplock_http",
        group_path=True,
        exclude=[r"^/metrics$"],
        middleware_class=RequestMetrics,
    )


async def refresh_queue_gauges(client: ClientDep) -> None:
    """Depth gauges from the database; when it does not answer, the last values stay (and every
    process metric is still served: an outage is when they matter)."""
    try:
        queues = await client.queues(max_age_s=DEPTH_MAX_AGE_S)
        served = await client.workers.served_queues(max_age_s=DEPTH_MAX_AGE_S)
    except DB_UNAVAILABLE_OR_TIMEOUT as exc:
        log.warning("queue_gauges_stale", error=str(exc) or type(exc).__name__)
        return
    metrics.queue_unserved.clear()
    for queue in queues:
        metrics.queue_unserved.labels(queue.name).set(0 if served_by(queue.name, served) else 1)
    metrics.queue_depth.clear()
    metrics.queue_oldest_age.clear()
    metrics.queue_unknown_task.clear()
    metrics.queue_limit.clear()
    metrics.jobs_waiting.clear()
    now = datetime.now(UTC)
    for queue in queues:
        for state, count in queue.counts.items():
            metrics.queue_depth.labels(queue.name, state.value).set(count)
        oldest = queue.oldest_queued_at
        metrics.queue_oldest_age.labels(queue.name).set((now - oldest).total_seconds() if oldest else 0)
        metrics.queue_unknown_task.labels(queue.name).set(queue.waiting_for_unknown_task)
        for kind, value in limit_samples(queue.limits).items():
            metrics.queue_limit.labels(queue.name, kind).set(value)
        for reason in WAITING_REASONS:
            metrics.jobs_waiting.labels(queue.name, reason).set(queue.waiting.get(reason, 0))


async def refresh_worker_gauges(client: ClientDep) -> None:
    """The fleet's gauges from the workers table; the last values stay while the database is away."""
    try:
        counts = await client.workers.counts(max_age_s=DEPTH_MAX_AGE_S)
    except DB_UNAVAILABLE_OR_TIMEOUT as exc:
        log.warning("worker_gauges_stale", error=str(exc) or type(exc).__name__)
        return
    for role in get_args(Role):
        metrics.workers_online.labels(role).set(sum(n for (r, _), n in counts.live.items() if r == role))
    metrics.worker_held_jobs_offline.set(counts.held_by_offline)


def limit_samples(limits: QueueLimitsInfo) -> dict[str, float]:
    """A queue's limits as gauge samples, by kind (the ones set)."""
    samples: dict[str, float] = {}
    if limits.concurrency is not None:
        samples["concurrency"] = limits.concurrency
    if limits.global_concurrency is not None:
        samples["global_concurrency"] = limits.global_concurrency
    if limits.rate_limit is not None:
        rate = Rate.parse(limits.rate_limit)
        samples["rate_limit"] = rate.limit
        samples["rate_period_seconds"] = rate.period_s
    if limits.key_concurrency is not None:
        samples["key_concurrency"] = limits.key_concurrency
    if limits.key_rate_limit is not None:
        key_rate = Rate.parse(limits.key_rate_limit)
        samples["key_rate_limit"] = key_rate.limit
        samples["key_rate_period_seconds"] = key_rate.period_s
    return samples


async def database_stats(app: Litestar, engine: Engine) -> DatabaseStats:
    """The database's health as :class:`DatabaseStatsReader` reads it, one reader per app (on the
    engine's pool), so /metrics and the dashboard's warning share one read every few seconds."""
    reader: DatabaseStatsReader | None = app.state.get("database_stats")
    if reader is None or reader.pool is not engine.pool:
        reader = DatabaseStatsReader(engine.pool, ENGINE_TABLES, max_age_s=DEPTH_MAX_AGE_S)
        app.state.database_stats = reader
    return await reader.read()


async def refresh_database_gauges(request: Request[Any, Any, Any], engine: EngineDep) -> None:
    """What holds back vacuum, the NOTIFY queue's use, rows and the last autovacuum per table, read
    at most every few seconds by one reader per app; the last values stay while the database does
    not answer."""
    stats = await database_stats(request.app, engine)
    if not stats.read_at:
        return  # never read: no values rather than made-up zeros
    metrics.db_oldest_transaction_age.set(stats.oldest_transaction_age_s)
    metrics.db_oldest_xmin_age.set(stats.oldest_xmin_age)
    metrics.db_replication_slot_xmin_age.set(stats.oldest_slot_xmin_age)
    metrics.db_notify_queue_usage.set(stats.notify_queue_usage)
    for table in stats.tables:
        metrics.db_live_tuples.labels(table.name).set(table.live)
        metrics.db_dead_tuples.labels(table.name).set(table.dead)
        if table.last_autovacuum is not None:
            metrics.db_last_autovacuum.labels(table.name).set(table.last_autovacuum)


class MetricsController(PrometheusController):
    opt = PUBLIC_ROUTE

    @get(include_in_schema=False)
    async def get(
        self, request: Request[Any, Any, Any], client: ClientDep, engine: EngineDep
    ) -> Response[bytes]:
        await refresh_queue_gauges(client)
        await refresh_worker_gauges(client)
        await refresh_database_gauges(request, engine)
        response: Response[bytes] = await super().get.fn(self)  # Litestar's exposition
        return response
