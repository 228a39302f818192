"""The engine's SQL, loaded from ``sql/*.sql`` into typed constants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skiplock.db.sqlfile import load_statements

if TYPE_CHECKING:
    import asyncpg

    from skiplock.db.pool import AnyConnection


@dataclass(frozen=True, slots=True)
class JobStatements:
    job_insert: str
    job_get: str
    job_list: str
    job_claim_many: str
    job_finish_many: str
    job_fail_outcome_not_stored: str
    job_heartbeat: str
    job_lock_rows: str
    job_cancel_requested: str
    job_rescue_pick: str
    job_rescue_expired: str
    job_release_many: str
    job_release_unstarted: str
    job_release_untracked: str
    job_release_unrun: str
    job_lock_owned: str
    job_cancel: str
    job_retry: str
    notify_cancel: str
    notify_queued: str
    job_prune_finished: str
    job_reserve_ids: str
    job_failures: str


@dataclass(frozen=True, slots=True)
class QueueStatements:
    queue_set_paused: str
    queue_overview: str
    task_register: str
    task_unregister: str


@dataclass(frozen=True, slots=True)
class EventStatements:
    event_list: str
    event_since_many: str
    event_get_many: str
    event_write_many: str


@dataclass(frozen=True, slots=True)
class ScheduleStatements:
    schedule_insert: str
    schedule_upsert_declared: str
    schedule_get: str
    schedule_list: str
    schedule_update: str
    schedule_delete: str
    schedule_claim_due: str
    schedule_claim_one: str
    schedule_advance: str
    schedule_next_due: str
    job_insert_scheduled_many: str
    schedule_advance_many: str


JOBS = load_statements(JobStatements, "skiplock.queue.sql", "jobs.sql")
QUEUES = load_statements(QueueStatements, "skiplock.queue.sql", "queues.sql")
EVENTS = load_statements(EventStatements, "skiplock.queue.sql", "events.sql")
SCHEDULES = load_statements(ScheduleStatements, "skiplock.queue.sql", "schedules.sql")

CHANNEL = "skiplock"


async def notify_requeued(conn: AnyConnection, rows: Sequence[asyncpg.Record]) -> None:
    """Wake the workers of the queues these handed-back rows (``queue``, ``state``) went back to."""
    requeued = sorted({r["queue"] for r in rows if r["state"] == "queued"})
    if requeued:
        await conn.execute(JOBS.notify_queued, requeued)
