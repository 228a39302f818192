"""Workflows in the database: start one (its steps and edges by COPY, in one transaction), read,
list, cancel and retry them, and what a running step sees of its dependencies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from skiplock.db.copy import copy_rows
from skiplock.db.moved import retry_moved
from skiplock.db.pool import AnyConnection, PoolOrConnection
from skiplock.db.replica import ReadRoute
from skiplock.errors import InvalidStateError, SkiplockError, WorkflowInvalid, WorkflowNotFound
from skiplock.queue._statements import WORKFLOWS, reserve_job_ids
from skiplock.queue.models import JobState, ResolvedJob
from skiplock.queue.workflows import (
    Step,
    UpstreamFailure,
    Workflow,
    WorkflowInfo,
    WorkflowStep,
)

_STEP_COLUMNS = (
    "id", "queue", "task", "args", "priority", "run_at", "max_attempts", "timeout_s", "origin",
    "workflow_id", "step", "deps_pending", "state", "concurrency_key", "shard",
)  # fmt: skip
_DEP_COLUMNS = ("upstream_id", "job_id", "position")


Resolve = Callable[[Step], ResolvedJob]


def resolve_steps(ordered: Sequence[Step], resolve: Resolve) -> list[ResolvedJob]:
    """Every step checked first; the first bad one raises :class:`WorkflowInvalid` naming it."""
    resolved = []
    for step in ordered:
        try:
            resolved.append(resolve(step))
        except SkiplockError as exc:
            raise WorkflowInvalid(f"step {step.name!r}: {exc.message}", step=step.name, **exc.extra) from exc
    return resolved


async def insert(
    conn: AnyConnection,
    workflow: Workflow,
    ordered: Sequence[Step],
    resolved: Sequence[ResolvedJob],
    origin: dict[str, Any] | None,
) -> tuple[asyncpg.Record, list[int]]:
    """The workflow's row, its steps (upstream first, so ids rise downstream) and edges; in the
    caller's transaction. Returns the row and the steps' job ids in ``ordered``'s order."""
    row = await conn.fetchrow(
        WORKFLOWS.workflow_insert, workflow.name, workflow.on_failure, len(ordered), origin
    )
    assert row is not None
    now, ids, shards = await reserve_job_ids(conn, len(ordered), (r.queue for r in resolved))
    id_of = {step.name: job_id for step, job_id in zip(ordered, ids, strict=True)}
    steps = (
        (
            job_id, r.queue, r.task, r.args, r.priority, now, r.max_attempts, r.timeout_s, origin,
            row["id"], step.name, len(step.after),
            JobState.WAITING.value if step.after else JobState.QUEUED.value, r.concurrency_key,
            shards[r.queue],
        )
        for job_id, step, r in zip(ids, ordered, resolved, strict=True)
    )  # fmt: skip
    await copy_rows(conn, "jobs", _STEP_COLUMNS, steps)
    edges = [
        (id_of[dep], id_of[step.name], position)
        for step in ordered
        for position, dep in enumerate(step.after)
    ]
    if edges:
        await copy_rows(conn, "job_deps", _DEP_COLUMNS, edges)
    return row, ids


async def get(
    conn: AnyConnection | asyncpg.Pool, workflow_id: int, *, with_steps: bool = True
) -> WorkflowInfo:
    row = await conn.fetchrow(WORKFLOWS.workflow_get, workflow_id)
    if row is None:
        raise WorkflowNotFound(f"no workflow with id {workflow_id}")
    steps = None
    if with_steps:
        records = await conn.fetch(WORKFLOWS.workflow_steps, workflow_id)
        steps = [
            WorkflowStep(
                name=r["step"], job_id=r["id"], task=r["task"], state=r["state"], after=list(r["after"])
            )
            for r in records
        ]
    return WorkflowInfo.from_record(row, steps)


async def list_workflows(
    pool: PoolOrConnection | ReadRoute, *, state: str | None, before_id: int | None, limit: int
) -> list[WorkflowInfo]:
    records = await pool.fetch(WORKFLOWS.workflow_list, state, before_id, limit)
    return [WorkflowInfo.from_record(r) for r in records]


async def cancel(pool: asyncpg.Pool, workflow_id: int) -> None:
    """Cancel a running workflow; :class:`InvalidStateError` when it has finished. Run again when
    a step's row it waited on was moved meanwhile (see skiplock.db.moved)."""
    await retry_moved(lambda: _cancel(pool, workflow_id))


async def _cancel(pool: asyncpg.Pool, workflow_id: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(WORKFLOWS.workflow_lock_steps, workflow_id)
        row = await conn.fetchrow(WORKFLOWS.workflow_cancel, workflow_id)
        assert row is not None
        if not row["cancelled"]:
            raise await _not_allowed(conn, workflow_id, "cancel", "it has finished")


async def retry(pool: asyncpg.Pool, workflow_id: int) -> None:
    """Run a failed or cancelled workflow's failed and cancelled steps again, with everything
    downstream of them; :class:`InvalidStateError` otherwise. Run again when a step's row it waited
    on was moved meanwhile (see skiplock.db.moved)."""
    await retry_moved(lambda: _retry(pool, workflow_id))


async def _retry(pool: asyncpg.Pool, workflow_id: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(WORKFLOWS.workflow_lock_steps, workflow_id)
        try:
            row = await conn.fetchrow(WORKFLOWS.workflow_retry, workflow_id)
        except asyncpg.UniqueViolationError as exc:  # a step's unique key: steps have none today
            raise InvalidStateError(f"workflow {workflow_id} cannot be retried: {exc}") from exc
        assert row is not None
        if not row["retried"]:
            raise await _not_allowed(
                conn,
                workflow_id,
                "retry",
                "only a failed or cancelled workflow whose steps have all ended can be",
            )


async def _not_allowed(conn: AnyConnection, workflow_id: int, action: str, why: str) -> Exception:
    row = await conn.fetchrow(WORKFLOWS.workflow_get, workflow_id)
    if row is None:
        return WorkflowNotFound(f"no workflow with id {workflow_id}")
    return InvalidStateError(
        f"cannot {action} workflow {workflow_id} in state {row['state']}: {why}", state=row["state"]
    )


async def upstream(pool: asyncpg.Pool, job_id: int) -> dict[str, Any]:
    """A step's direct dependencies, by name in the order of its ``after``: each one's result, or
    an :class:`UpstreamFailure` for one that did not succeed (under ``on_failure="continue"``)."""
    return {
        r["step"]: r["result"]
        if r["state"] == JobState.SUCCEEDED
        else UpstreamFailure(r["state"], r["error"])
        for r in await pool.fetch(WORKFLOWS.workflow_upstream, job_id)
    }


async def leaves(pool: asyncpg.Pool | AnyConnection, workflow_id: int) -> dict[str, Any]:
    """The result of a workflow: its last steps' results by name (failures as their JSON)."""
    return {
        r["step"]: r["result"]
        if r["state"] == JobState.SUCCEEDED
        else UpstreamFailure(r["state"], r["error"]).as_json()
        for r in await pool.fetch(WORKFLOWS.workflow_leaves, workflow_id)
    }
