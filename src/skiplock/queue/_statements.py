"""The engine's SQL, loaded from ``sql/*.sql`` into typed constants."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from skiplock.db.sqlfile import Statement, load_statements

if TYPE_CHECKING:
    import asyncpg

    from skiplock.db.pool import AnyConnection, PoolOrConnection


@dataclass(frozen=True, slots=True)
class JobStatements:
    job_insert: Statement
    job_insert_child: Statement
    job_child_twin: Statement
    job_get: Statement
    job_list: Statement
    job_search: Statement
    job_search_timeout: Statement
    job_max_id: Statement
    job_claim_many: Statement
    job_claim_after: Statement
    job_claim_limited: Statement
    job_claim_keyed: Statement
    job_finish_many: Statement
    job_fail_outcome_not_stored: Statement
    job_heartbeat: Statement
    job_lock_rows: Statement
    job_cancel_requested: Statement
    job_rescue_pick: Statement
    job_rescue_expired: Statement
    job_expire_queued: Statement
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
    history_make: Statement
    history_drop: Statement
    job_reserve_ids: Statement
    job_failures: Statement


@dataclass(frozen=True, slots=True)
class QueueStatements:
    queue_set_paused: Statement
    queue_set_limits: Statement
    queue_declare_limits: Statement
    queue_limits: Statement
    queue_shards: Statement
    queue_key_starts_prune: Statement
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


# The hot statements' parameters, one typed tuple each, fields in the order of $1, $2, …: built
# by keyword, so a caller cannot misorder them, and sent as ``*params`` at a tuple's cost
# (tests/integration/test_sql.py checks each has as many fields as its statement has parameters).


class JobInsert(NamedTuple):
    """``job_insert``: one job; ``run_at`` or ``delay_s`` (neither: now); ``expires_at`` or
    ``expires_in_s`` (neither: no expiry)."""

    queue: str
    task: str
    args: dict[str, Any]
    priority: int
    run_at: datetime | None
    delay_s: float | None
    max_attempts: int
    timeout_s: float | None
    unique_key: str | None
    origin: dict[str, Any] | None
    wake_later: bool  # the caller wakes the workers after its commit: the insert sends no NOTIFY
    expires_at: datetime | None = None  # or expires_in_s (neither: it never expires)
    expires_in_s: float | None = None
    concurrency_key: str | None = None  # its key for per-key limits (the task's concurrency_key)


class JobClaim(NamedTuple):
    """``job_claim_many``: up to ``limit`` due jobs of ``queue`` for ``owner``, in the queue's
    ``shard`` (``queue_shards``)."""

    queue: str
    limit: int
    owner: str
    lease_s: float
    now: datetime | None  # None: the server's clock (tests pin it)
    tasks: Sequence[str]  # only jobs of these tasks (the ones this process registered)
    excluded: Sequence[int]  # never these jobs (the ones this process still runs)
    shard: int  # the queue's (skiplock_shard): the claim reads that shard alone


class JobClaimAfter(NamedTuple):
    """``job_claim_after``: a :class:`JobClaim` going on after a place in claim order (the job of
    ``priority`` at ``run_at`` with ``id``), within that priority."""

    queue: str
    limit: int
    owner: str
    lease_s: float
    now: datetime | None
    tasks: Sequence[str]
    excluded: Sequence[int]
    shard: int
    priority: int
    run_at: datetime
    id: int


class JobFinish(NamedTuple):
    """``job_finish_many``: outcomes of jobs ``owner`` runs, one per place in the columns; ``ids``
    sorted and distinct. ``states``: a job state each, or ``snoozed`` (queued again, the attempt
    not held against it). ``results``, ``errors`` and ``progress`` are JSON text."""

    ids: Sequence[int]
    attempts: Sequence[int]
    states: Sequence[str]
    results: Sequence[str | None]
    errors: Sequence[str | None]
    retry_in_s: Sequence[float | None]
    progress: Sequence[str | None]
    owner: str
    shard: int  # every job of the batch is in this shard (the completer's batches are of one)


class JobHeartbeat(NamedTuple):
    """``job_heartbeat``: extend ``owner``'s leases on ``ids``, each at its attempt beside it, all
    in ``shard``."""

    ids: Sequence[int]
    owner: str
    lease_s: float
    attempts: Sequence[int]
    shard: int


async def insert_job(target: PoolOrConnection, params: JobInsert) -> asyncpg.Record | None:
    """The new job's row (``created`` true), the live job holding its ``unique_key`` (false), or
    None when that job finished in between (insert again)."""
    return await target.fetchrow(JOBS.job_insert, *params)


async def insert_child_job(
    target: PoolOrConnection, params: JobInsert, parent_id: int, child_key: str
) -> asyncpg.Record | None:
    """As :func:`insert_job`, for a job that running job ``parent_id`` enqueues under ``child_key``:
    the child it already made under that key (``created`` false) comes first, even one that ended
    while this insert waited for its row (job_child_twin)."""
    record = await target.fetchrow(JOBS.job_insert_child, *params, parent_id, child_key)
    if record is not None and record["created"]:
        twin = await target.fetchrow(JOBS.job_child_twin, parent_id, child_key, record["id"])
        if twin is not None:
            return twin
    return record


class Reserved(NamedTuple):
    """What a bulk COPY of jobs writes beside each row: the transaction's clock, new ids in order,
    and the shard of each of its queues."""

    now: datetime
    ids: list[int]
    shards: dict[str, int]


async def reserve_job_ids(conn: AnyConnection, count: int, queues: Iterable[str]) -> Reserved:
    """:class:`Reserved` for ``count`` jobs of ``queues`` (for a bulk COPY)."""
    names = sorted(set(queues))
    reserved = await conn.fetchrow(JOBS.job_reserve_ids, count, names)
    assert reserved is not None  # one row, always
    return Reserved(reserved["now"], reserved["ids"], dict(zip(names, reserved["shards"], strict=True)))


async def claim_jobs(conn: AnyConnection, params: JobClaim) -> list[asyncpg.Record]:
    """The claimed rows, now running under the lease (``ClaimedJob.from_record`` reads them)."""
    return await conn.fetch(JOBS.job_claim_many, *params)


async def claim_jobs_after(conn: AnyConnection, params: JobClaimAfter) -> list[asyncpg.Record]:
    """As :func:`claim_jobs`, the index scan starting at the given place."""
    return await conn.fetch(JOBS.job_claim_after, *params)


async def claim_jobs_limited(conn: AnyConnection, params: JobClaim) -> list[asyncpg.Record]:
    """As :func:`claim_jobs`, for a queue with limits across replicas: every row also says the
    claim's ``budget``, its ``clock`` and ``next_at`` (when the rate limit allows the next start, if
    it held the claim back); with nothing claimed, one such row whose ``id`` is null."""
    return await conn.fetch(JOBS.job_claim_limited, *params)


async def claim_jobs_keyed(conn: AnyConnection, params: JobClaim) -> list[asyncpg.Record]:
    """As :func:`claim_jobs_limited`, for a queue with per-key limits (keys served round-robin);
    every row also says whether a concurrency (the queue's or a key's) ``held`` a job back."""
    return await conn.fetch(JOBS.job_claim_keyed, *params)


async def finish_jobs(conn: AnyConnection, params: JobFinish) -> list[int]:
    """The ids whose outcome was written; the others were no longer the owner's at their attempt."""
    return [r[0] for r in await conn.fetch(JOBS.job_finish_many, *params)]


async def renew_leases(
    conn: AnyConnection, params: JobHeartbeat, *, statement_timeout_s: float | None
) -> set[int]:
    """The ids whose lease was extended: the ones still the owner's at their attempt."""
    return {r[0] for r in await conn.fetch(JOBS.job_heartbeat, *params, timeout=statement_timeout_s)}


@dataclass(frozen=True, slots=True)
class WorkflowStatements:
    workflow_insert: Statement
    workflow_get: Statement
    workflow_list: Statement
    workflow_steps: Statement
    workflow_lock_steps: Statement
    workflow_of_job: Statement
    workflow_lock_many: Statement
    workflow_cancel: Statement
    workflow_retry: Statement
    workflow_upstream: Statement
    workflow_leaves: Statement
    workflow_prune_finished: Statement


WORKFLOWS = load_statements(WorkflowStatements, "skiplock.queue.sql", "workflows.sql")


@dataclass(frozen=True, slots=True)
class WorkerStatements:
    worker_register: Statement
    worker_beat: Statement
    worker_stopped: Statement
    worker_list: Statement
    worker_request: Statement
    worker_served_queues: Statement
    worker_counts: Statement
    worker_prune: Statement
    job_queues_queued: Statement


WORKERS = load_statements(WorkerStatements, "skiplock.queue.sql", "workers.sql")


@dataclass(frozen=True, slots=True)
class StatsStatements:
    stats_window: Statement
    stats_roll: Statement
    stats_sample_depth: Statement
    stats_advance: Statement
    stats_prune: Statement
    stats_timeout: Statement
    stats_series: Statement


STATS = load_statements(StatsStatements, "skiplock.queue.sql", "stats.sql")


@dataclass(frozen=True, slots=True)
class BulkStatements:
    bulk_match: Statement
    bulk_asked_at: Statement
    bulk_queue_paused: Statement
    bulk_page: Statement
    bulk_lock_rows: Statement
    bulk_cancel: Statement
    bulk_notify_cancel: Statement
    bulk_retry: Statement
    bulk_delete: Statement


BULK = load_statements(BulkStatements, "skiplock.queue.sql", "bulk.sql")
