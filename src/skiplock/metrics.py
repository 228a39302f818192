"""Prometheus metrics of this process (each replica reports its own; depth gauges read the database).

Defined once per process in prometheus_client's default registry, which Litestar's /metrics serves
together with its HTTP request metrics.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

_JOB = ("queue", "task")
_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class CounterChild:
    """One label set of a :class:`LockFreeCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    """One label set of a :class:`LockFreeHistogram`: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf's
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1  # le: a bound includes its value
        self.sum += amount


class _LockFree(Collector):
    """The per-job metrics, updated on the event loop only: plain numbers, no lock. Those of
    prometheus_client take a lock per update: with the labels' lookups, a few percent of a no-op
    job's cost. The exposition is the same (``_total``, ``_bucket``, ``_created`` samples)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *, register: bool = True
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        if register:  # in the process's registry, which /metrics serves
            REGISTRY.register(self)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def _family(self) -> Metric:
        raise NotImplementedError


class LockFreeCounter(_LockFree):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *, register: bool = True
    ) -> None:
        self._children: dict[tuple[str, ...], CounterChild] = {}
        super().__init__(name, documentation, labelnames, register=register)

    def labels(self, *values: str) -> CounterChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = CounterChild()
        return child

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):  # a snapshot: a scrape may run on a thread
            family.add_metric(values, child.value, created=child.created)
        yield family


class LockFreeHistogram(_LockFree):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        register: bool = True,
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        super().__init__(name, documentation, labelnames, register=register)

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = HistogramChild(self.bounds)
        return child

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        names = [*(repr(b) for b in self.bounds), "+Inf"]  # as prometheus_client writes them: 1.0
        for values, child in list(self._children.items()):
            counts, total, cumulative = list(child.counts), child.sum, 0
            buckets = []
            for name, count in zip(names, counts, strict=True):
                cumulative += count
                buckets.append((name, float(cumulative)))
            family.add_metric(values, buckets, total)
            labels = dict(zip(self.labelnames, values, strict=True))
            family.samples.append(Sample(f"{self.name}_created", labels, child.created))
        yield family


jobs_enqueued = Counter("skiplock_jobs_enqueued_total", "Jobs enqueued by this process.", _JOB)
jobs_started = LockFreeCounter("skiplock_jobs_started_total", "Job attempts started by this process.", _JOB)
jobs_finished = LockFreeCounter(
    "skiplock_jobs_finished_total",
    "Job attempts ended by this process: succeeded, failed, cancelled, retried (failed, will run "
    "again), snoozed (raised Snooze: queued again, no attempt used) or released (handed back at "
    "shutdown).",
    (*_JOB, "outcome"),
)
job_duration = LockFreeHistogram(
    "skiplock_job_duration_seconds", "How long an attempt ran.", _JOB, buckets=_DURATIONS
)
job_wait = LockFreeHistogram(
    "skiplock_job_wait_seconds",
    "From when a job was due to when an attempt started (enqueue to start, for jobs due at once).",
    ("queue",),
    buckets=_DURATIONS,
)
jobs_running = Gauge("skiplock_jobs_running", "Jobs running in this process now.")
task_processes = Gauge("skiplock_task_processes", "Children of this process's task process pool alive now.")
task_process_exits = Counter(
    "skiplock_task_process_exits_total",
    "Children of the task process pool gone: crashed (died on their own during a job), killed (a time"
    " limit, a cancel, a lost lease, the shutdown), recycled (max tasks or memory per child).",
    ("reason",),
)
lease_rescues = Counter("skiplock_lease_rescues_total", "Jobs whose expired lease this process rescued.")
schedule_fires = Counter("skiplock_schedule_fires_total", "Jobs this process's scheduler fired.")
schedule_misfires = Counter(
    "skiplock_schedule_misfires_total",
    "Due ticks this process's scheduler skipped: missed beyond the misfire policy (downtime), or "
    "the ticks of a schedule that cannot fire.",
)
schedule_errors = Counter(
    "skiplock_schedule_errors_total",
    "Schedules this process's scheduler could not fire: an invalid row (parked, reason=invalid) or "
    "a tick whose job could not be stored (dropped, reason=unstorable).",
    ("reason",),
)
subscribers = Gauge("skiplock_event_subscribers", "Websocket and SSE event subscribers of this process.")
result_waiters = Gauge(
    "skiplock_result_waiters",
    "Waits for a job's or a workflow's result under way in this process (long polls included).",
)
listener_reconnects = Counter(
    "skiplock_listener_reconnects_total", "Times the LISTEN connection was re-established."
)
loop_errors = Counter(
    "skiplock_loop_errors_total",
    "Unexpected errors a background loop survived (it logged, backed off and went on).",
    ("service",),
)
events_dropped = Counter(
    "skiplock_events_dropped_total", "Progress and log events the database refused (each one logged)."
)
outcomes_not_stored = Counter(
    "skiplock_outcomes_not_stored_total",
    "Job outcomes the database refused: the job failed with OutcomeNotStored instead (or, if even "
    "that was refused, was left for its lease to expire).",
)
queue_depth = Gauge(
    "skiplock_queue_depth",
    "Jobs per queue and state, from the database (read at most every 5 s).",
    ("queue", "state"),
)
queue_unknown_task = Gauge(
    "skiplock_queue_unknown_task_jobs",
    "Queued jobs per queue whose task no live worker has registered, from the database (read at "
    "most every 5 s).",
    ("queue",),
)
queue_oldest_age = Gauge(
    "skiplock_queue_oldest_queued_age_seconds",
    "Age of the longest-waiting due job per queue, from the database (0 when none).",
    ("queue",),
)
queue_limit = Gauge(
    "skiplock_queue_limit",
    "A queue's limits set in the database, per kind: concurrency (per process), global_concurrency, "
    "rate_limit (starts per window) and rate_period_seconds (the window), key_concurrency, "
    "key_rate_limit and key_rate_period_seconds (per concurrency key value); no sample: not set.",
    ("queue", "kind"),
)
jobs_waiting = Gauge(
    "skiplock_jobs_waiting",
    "Jobs per queue not started yet, by why (a job's waiting_on: dependencies, run_at, paused, "
    "unknown_task, rate_limit, global_concurrency, key_concurrency), from the database (read at most "
    "every 5 s).",
    ("queue", "reason"),
)
queue_unserved = Gauge(
    "skiplock_queue_unserved",
    "1 for a queue that no live worker claims from (none serves it, or those that do are quiet or "
    "stopping), else 0; from the workers table (read at most every 5 s).",
    ("queue",),
)
workers_online = Gauge(
    "skiplock_workers_online",
    "Live processes per role (serve, worker, api), quiet and stopping ones included; from the workers "
    "table (read at most every 5 s).",
    ("role",),
)
worker_held_jobs_offline = Gauge(
    "skiplock_worker_held_jobs_offline",
    "Running jobs whose leases workers that went offline hold: they run again once their lease and its "
    "hold have passed and a rescuer takes them (read at most every 5 s).",
)
read_fallbacks = Counter(
    "skiplock_read_fallbacks_total",
    "Reads meant for the read replica (SKIPLOCK_READ_DATABASE_URL) that the primary served: the replica"
    " down (unreachable, or its connection broke), lagging (more than SKIPLOCK_READ_MAX_LAG_S behind),"
    " or conflict (the standby cancelled the read for a conflict with recovery).",
    ("reason",),
)
read_replica_lag = Gauge(
    "skiplock_read_replica_lag_seconds",
    "How far the read replica was behind at its last check (at most every second; 0: caught up).",
)
db_oldest_transaction_age = Gauge(
    "skiplock_db_oldest_transaction_age_seconds",
    "Age of the oldest open transaction in this database (it holds back vacuum), from "
    "pg_stat_activity (read at most every 5 s; the last value stays while the database is away).",
)
db_oldest_xmin_age = Gauge(
    "skiplock_db_oldest_xmin_age_transactions",
    "Transactions since the oldest snapshot a session of this database holds (vacuum removes no row "
    "version dead after it), from pg_stat_activity's backend_xmin (read at most every 5 s).",
)
db_replication_slot_xmin_age = Gauge(
    "skiplock_db_replication_slot_xmin_age_transactions",
    "Transactions since the oldest replication slot's xmin or catalog_xmin, from pg_replication_slots "
    "(0 without slots; read at most every 5 s).",
)
db_notify_queue_usage = Gauge(
    "skiplock_db_notify_queue_usage",
    "Fraction of the server's NOTIFY queue in use, from pg_notification_queue_usage() (at 1 every NOTIFY "
    "fails; read at most every 5 s).",
)
db_last_autovacuum = Gauge(
    "skiplock_db_last_autovacuum_timestamp_seconds",
    "When autovacuum last finished on each engine table (Unix time; no sample: never), from "
    "pg_stat_user_tables (read at most every 5 s).",
    ("table",),
)
db_live_tuples = Gauge(
    "skiplock_db_live_tuples",
    "Live rows per engine table, from pg_stat_user_tables (read at most every 5 s).",
    ("table",),
)
db_dead_tuples = Gauge(
    "skiplock_db_dead_tuples",
    "Dead row versions vacuum has not removed yet, per engine table, from pg_stat_user_tables "
    "(read at most every 5 s).",
    ("table",),
)


class PoolCounts(Protocol):
    """What a pool counts of its acquires (skiplock.db.pool.Pool)."""

    acquire_waits: int
    acquire_wait_s: float


class PoolWaits(Collector):
    """``skiplock_db_pool_acquire_waits_total`` and ``..._wait_seconds_total`` per pool: acquires that
    found every connection of the pool in use, and how long they waited. The pool counts (two
    additions, on such acquires only); this reads its counts at scrape."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolCounts] = {}
        REGISTRY.register(self)

    def track(self, name: str, pool: PoolCounts) -> None:
        """Report ``pool`` as ``name`` (a pool given the same name later takes its place)."""
        self.pools[name] = pool

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                "skiplock_db_pool_acquire_waits",
                "Acquires of a connection from this process's pool (engine or tasks) that found all of its "
                "connections in use and waited for one.",
                labels=("pool",),
            ),
            CounterMetricFamily(
                "skiplock_db_pool_acquire_wait_seconds",
                "Time those acquires waited, in all.",
                labels=("pool",),
            ),
        )

    def collect(self) -> Iterator[Metric]:
        waits, seconds = self._families()
        for name, pool in list(self.pools.items()):
            waits.add_metric((name,), pool.acquire_waits)
            seconds.add_metric((name,), pool.acquire_wait_s)
        yield waits
        yield seconds


pool_waits = PoolWaits()


class JobMetrics(NamedTuple):
    """One queue and task's children of the job metrics: labels() costs more than the update."""

    enqueued: Counter
    started: CounterChild
    duration: HistogramChild
    wait: HistogramChild


@functools.lru_cache(maxsize=4096)
def for_job(queue: str, task: str) -> JobMetrics:
    return JobMetrics(
        jobs_enqueued.labels(queue, task),
        jobs_started.labels(queue, task),
        job_duration.labels(queue, task),
        job_wait.labels(queue),
    )


@functools.lru_cache(maxsize=4096)
def finished(queue: str, task: str, outcome: str) -> CounterChild:
    return jobs_finished.labels(queue, task, outcome)
