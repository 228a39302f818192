"""Bulk actions: retry, cancel or delete the jobs a list names or a filter matches (at most
:data:`MAX_BULK`), done a batch at a time by a job of its own (the ``bulk_jobs`` task).

:meth:`Client.bulk` counts the jobs matched and enqueues the bulk job, whose args (a
:class:`BulkPlan`) carry the ids or the filter with the id range it matched. The job walks that
range newest first, :data:`BATCH` jobs a transaction, each write guarded by state as the single
actions are: a job that changed meanwhile (finished before its cancel, retried already, running
when deleted) is left alone and counted as skipped. A run again (a rescued lease) walks the range
again; what was done stays done, and the plan's ``asked_at`` keeps it to the jobs as they were
asked: retry and delete take jobs finished by then (not one retried that failed again since),
cancel jobs created by then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from skiplock.db.moved import retry_moved
from skiplock.db.pool import AnyConnection
from skiplock.errors import ConflictError
from skiplock.queue._statements import BULK, JOBS, WORKFLOWS
from skiplock.queue.models import JobState
from skiplock.queue.workers import served_by

BulkAction = Literal["retry", "cancel", "delete"]
#: The most jobs one bulk action takes (the newest matched, for a filter).
MAX_BULK = 100_000
#: Jobs a batch: one transaction, one statement per step.
BATCH = 1000
#: The task that does the work, a built-in (skiplock.tasks.bulk).
BULK_TASK = "bulk_jobs"
#: How long counting a filter's jobs may take.
MATCH_TIMEOUT_S = 5.0

_ID = Annotated[int, Field(ge=1, le=2**63 - 1)]


class JobFilter(BaseModel):
    """GET /jobs' filters, and the dashboard's search (args containment, error text)."""

    model_config = ConfigDict(extra="forbid")

    state: JobState | None = None
    queue: str | None = Field(default=None, min_length=1, max_length=200)
    task: str | None = Field(default=None, min_length=1, max_length=200)
    schedule_id: _ID | None = None
    workflow_id: _ID | None = None
    args: dict[str, Any] | None = Field(default=None, description="Jobs whose args contain this (JSON).")
    error: str | None = Field(
        default=None, min_length=1, max_length=200, description="An attempt's error type or message has it."
    )

    def params(self) -> tuple[Any, ...]:
        """The first seven parameters of bulk_match and bulk_page."""
        pattern = None if self.error is None else "%" + _like_escaped(self.error) + "%"
        return (self.state, self.queue, self.task, self.schedule_id, self.workflow_id, self.args, pattern)


class BulkPlan(BaseModel):
    """The bulk job's args: the action, and the ids or the filter with the range it matched."""

    model_config = ConfigDict(extra="forbid")

    action: BulkAction
    ids: list[int] | None = Field(default=None, max_length=MAX_BULK)
    filter: JobFilter | None = None
    top: int = Field(default=0, ge=0, description="The newest id matched.")
    bottom: int = Field(default=0, ge=0, description="The oldest id matched.")
    matched: int = Field(ge=0, le=MAX_BULK)
    asked_at: datetime = Field(
        description="When it was asked: retry and delete take jobs finished by then, cancel jobs "
        "created by then."
    )


class BulkStarted(BaseModel):
    """POST /jobs/bulk's answer: the bulk job, and how many jobs it acts on."""

    job_id: int = Field(description="The bulk job: its page and GET /jobs/{id} show its progress.")
    action: BulkAction
    matched: int = Field(description="Jobs matched now; those that change meanwhile are skipped.")


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def match(conn: AnyConnection, job_filter: JobFilter) -> tuple[int, int, int]:
    """How many jobs the filter matches (at most :data:`MAX_BULK`, the newest), and the newest and
    oldest id among them; under a statement_timeout of :data:`MATCH_TIMEOUT_S`."""
    await conn.execute(JOBS.job_search_timeout, round(MATCH_TIMEOUT_S * 1000))
    row = await conn.fetchrow(BULK.bulk_match, *job_filter.params(), MAX_BULK)
    assert row is not None
    return row["matched"], row["top"], row["bottom"]


async def asked_at(conn: AnyConnection) -> datetime:
    """The database's time now: a plan's :attr:`BulkPlan.asked_at`."""
    value: datetime = await conn.fetchval(BULK.bulk_asked_at)
    return value


async def check_runnable(conn: AnyConnection, queue: str, served: dict[str, int]) -> None:
    """ConflictError unless a live worker claims from ``queue`` (``served``: see
    :meth:`Workers.served_queues`) and it is not paused: a bulk job there would never run."""
    if not served_by(queue, served):
        raise ConflictError(
            f"no live worker serves queue {queue!r}, where {BULK_TASK} runs: start one whose "
            f"SKIPLOCK_QUEUES includes {queue!r} (or '*', or leave it empty)",
            queue=queue,
        )
    if await conn.fetchval(BULK.bulk_queue_paused, queue):
        raise ConflictError(f"queue {queue!r}, where {BULK_TASK} runs, is paused: resume it", queue=queue)


async def _page(pool: asyncpg.Pool, plan: BulkPlan, below: int) -> list[int]:
    assert plan.filter is not None
    rows = await pool.fetch(BULK.bulk_page, *plan.filter.params(), plan.bottom, below, BATCH)
    return [r["id"] for r in rows]


async def _apply(conn: AnyConnection, action: BulkAction, ids: Sequence[int], asked: datetime) -> int:
    """The action on the jobs among ``ids`` it applies to (as they were ``asked``), in the caller's
    transaction: how many."""
    if action == "cancel":
        workflows = await conn.fetchval(BULK.bulk_lock_rows, ids)
        if workflows:
            await conn.execute(WORKFLOWS.workflow_lock_many, sorted(workflows))
        rows = await conn.fetch(BULK.bulk_cancel, ids, asked)
        running = [r["id"] for r in rows if r["state"] == JobState.RUNNING]
        if running:
            await conn.execute(BULK.bulk_notify_cancel, running)
        return len(rows)
    if action == "retry":
        rows = await conn.fetch(BULK.bulk_retry, ids, asked)
        queues = sorted({r["queue"] for r in rows})
        if queues:
            await conn.execute(JOBS.notify_queued, queues)
        return len(rows)
    return len(await conn.fetch(BULK.bulk_delete, ids, asked))


async def apply_batch(pool: asyncpg.Pool, action: BulkAction, ids: Sequence[int], asked: datetime) -> int:
    """One batch in one transaction: how many jobs it changed. A retry that would give a second
    live job one unique_key is done job by job instead, the one in conflict skipped. Run again when
    a row it waited on was moved meanwhile (see skiplock.db.moved)."""
    return await retry_moved(lambda: _apply_batch(pool, action, ids, asked))


async def _apply_batch(pool: asyncpg.Pool, action: BulkAction, ids: Sequence[int], asked: datetime) -> int:
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                return await _apply(conn, action, ids, asked)
        except asyncpg.UniqueViolationError:
            if len(ids) == 1:
                return 0
        done = 0
        for one in ids:
            try:
                async with conn.transaction():
                    done += await _apply(conn, action, [one], asked)
            except asyncpg.UniqueViolationError:
                continue
        return done


async def run(
    pool: asyncpg.Pool, plan: BulkPlan, progress: Callable[[int, int], Awaitable[None]]
) -> dict[str, Any]:
    """Walk the plan a batch at a time, calling ``progress(seen, done)`` after each; the outcome."""
    seen = done = 0
    if plan.ids is not None:
        for start in range(0, len(plan.ids), BATCH):
            batch = plan.ids[start : start + BATCH]
            done += await apply_batch(pool, plan.action, batch, plan.asked_at)
            seen += len(batch)
            await progress(seen, done)
    elif plan.matched:
        below = plan.top + 1
        limit = min(plan.matched, MAX_BULK)  # the model's bound, kept by the walk itself too
        while seen < limit and (batch := await _page(pool, plan, below)):
            batch = batch[: limit - seen]
            done += await apply_batch(pool, plan.action, batch, plan.asked_at)
            seen += len(batch)
            below = batch[-1]
            await progress(seen, done)
    return {"action": plan.action, "matched": plan.matched, "done": done, "skipped": plan.matched - done}
