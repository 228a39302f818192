"""Prometheus metrics of this process (each replica reports its own; depth gauges read the database).

Defined once per process in prometheus_client's default registry, which Litestar's /metrics serves
together with its HTTP request metrics.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from prometheus_client import Counter, Gauge, Histogram

_JOB = ("queue", "task")
_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

jobs_enqueued = Counter("skiplock_jobs_enqueued_total", "Jobs enqueued by this process.", _JOB)
jobs_started = Counter("skiplock_jobs_started_total", "Job attempts started by this process.", _JOB)
jobs_finished = Counter(
    "skiplock_jobs_finished_total",
    "Job attempts ended by this process: succeeded, failed, cancelled, retried (failed, will run "
    "again) or released (handed back at shutdown).",
    (*_JOB, "outcome"),
)
job_duration = Histogram(
    "skiplock_job_duration_seconds", "How long an attempt ran.", _JOB, buckets=_DURATIONS
)
job_wait = Histogram(
    "skiplock_job_wait_seconds",
    "From when a job was due to when an attempt started (enqueue to start, for jobs due at once).",
    ("queue",),
    buckets=_DURATIONS,
)
jobs_running = Gauge("skiplock_jobs_running", "Jobs running in this process now.")
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
db_oldest_transaction_age = Gauge(
    "skiplock_db_oldest_transaction_age_seconds",
    "Age of the oldest open transaction in this database (it holds back vacuum), from "
    "pg_stat_activity (read at most every 5 s; the last value stays while the database is away).",
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


class JobMetrics(NamedTuple):
    """One queue and task's children of the job metrics: labels() costs more than the update."""

    enqueued: Counter
    started: Counter
    duration: Histogram
    wait: Histogram


@functools.lru_cache(maxsize=4096)
def for_job(queue: str, task: str) -> JobMetrics:
    return JobMetrics(
        jobs_enqueued.labels(queue, task),
        jobs_started.labels(queue, task),
        job_duration.labels(queue, task),
        job_wait.labels(queue),
    )


@functools.lru_cache(maxsize=4096)
def finished(queue: str, task: str, outcome: str) -> Counter:
    return jobs_finished.labels(queue, task, outcome)
