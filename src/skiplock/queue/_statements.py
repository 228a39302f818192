"""The engine's SQL, loaded from ``sql/*.sql`` into typed constants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skiplock.db.sqlfile import Statement, load_statements

if TYPE_CHECKING:
    import asyncpg

    from skiplock.db.pool import AnyConnection


@dataclass(frozen=True, slots=True)
class JobStatements:
    job_insert: Statement
    job_get: Statement
    job_list: Statement
    job_claim_many: Statement
    job_finish_many: Statement
    job_fail_outcome_not_stored: Statement
    job_heartbeat: Statement
    job_lock_rows: Statement
    job_cancel_requested: Statement
    job_rescue_pick: Statement
    job_rescue_expired: Statement
    job_release_many: Statement
    job_release_unstarted: Statement
    job_release_untracked: Statement
    job_release_unrun: Statement
    job_lock_owned: Statement
    job_cancel: Statement
    job_retry: Statement
    notify_cancel: Statement
    notify_queued: Statement
    job_prune_finished: Statement
    job_reserve_ids: Statement
    job_failures: Statement


@dataclass(frozen=True, slots=True)
class QueueStatements:
    queue_set_paused: Statement
    queue_overview: Statement
    task_register: Statement
    task_unregister: Statement


@dataclass(frozen=True, slots=True)
class EventStatements:
    event_list: Statement
    event_since_many: Statement
    event_get_many: Statement
    event_write_many: Statement


@dataclass(frozen=True, slots=True)
class ScheduleStatements:
    schedule_insert: Statement
    schedule_upsert_declared: Statement
    schedule_get: Statement
    schedule_list: Statement
    schedule_update: Statement
    schedule_delete: Statement
    schedule_claim_due: Statement
    schedule_claim_one: Statement
    schedule_advance: Statement
    schedule_next_due: Statement
    job_insert_scheduled_many: Statement
    schedule_advance_many: Statement


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
