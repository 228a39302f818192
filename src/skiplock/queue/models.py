"""What the engine reads and returns: job states, the job row, a claimed job, queue counts."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal, NamedTuple

import asyncpg
from pydantic import BaseModel, ConfigDict, Field


class JobState(enum.StrEnum):
    WAITING = "waiting"  # a workflow step whose dependencies have not all ended: never claimed
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class AttemptError(BaseModel):
    """The error of one failed attempt."""

    attempt: int
    type: str
    message: str
    traceback: str | None = None
    at: datetime


#: Why a job that is not running has not started yet (see migration 0020), the first that applies.
WaitingOn = Literal[
    "dependencies", "run_at", "paused", "unknown_task", "rate_limit", "global_concurrency", "key_concurrency"
]


class Job(BaseModel):
    """A job as stored."""

    model_config = ConfigDict(frozen=True)

    id: int
    task: str
    queue: str
    state: JobState
    priority: int
    args: dict[str, Any]
    attempts: int
    max_attempts: int
    timeout_s: float | None
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None
    result: Any
    errors: list[AttemptError]
    unique_key: str | None
    event_seq: int = Field(default=0, description="Seq of the job's latest event.")
    schedule_id: int | None = Field(default=None, description="The schedule that created it, if any.")
    scheduled_for: datetime | None = Field(default=None, description="The schedule's tick it is for.")
    origin: dict[str, Any] | None = Field(
        default=None, description="The request that enqueued it: request_id (and trace context)."
    )
    workflow_id: int | None = Field(default=None, description="The workflow it is a step of, if any.")
    step: str | None = Field(default=None, description="Its step's name in that workflow.")
    parent_id: int | None = Field(
        default=None, description="The job whose run enqueued it (ctx.enqueue), if any."
    )
    expires_at: datetime | None = Field(
        default=None, description="Not started by then, it is cancelled (error type 'expired')."
    )
    concurrency_key: str | None = Field(
        default=None, description="Its key for its queue's per-key limits (its task's concurrency_key)."
    )
    waiting_on: WaitingOn | None = Field(
        default=None,
        description="Why it has not started yet (read with the job): dependencies, run_at, paused, "
        "unknown_task, rate_limit, global_concurrency, key_concurrency; null when it runs or ended, or "
        "is next in line.",
    )
    created: bool = Field(default=True, exclude=True, description="False when a live unique_key matched.")

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Job:
        return cls.model_validate(dict(record))


class QueueLimitsInfo(BaseModel):
    """A queue's limits as the database keeps them (null: not set), the same for every replica."""

    concurrency: int | None = Field(
        default=None, description="Jobs of the queue one process runs at once, overriding its configuration."
    )
    global_concurrency: int | None = Field(
        default=None, description="Jobs of the queue running at once across every process."
    )
    rate_limit: str | None = Field(
        default=None,
        description="At most this many starts in any window of one unit, across every process.",
        examples=["100/minute"],
    )
    key_concurrency: int | None = Field(
        default=None, description="Jobs running at once per concurrency key value, across every process."
    )
    key_rate_limit: str | None = Field(
        default=None,
        description="At most this many starts per concurrency key value in any window of one unit.",
        examples=["10/minute"],
    )


class QueueInfo(BaseModel):
    """A queue: job counts per state, whether it is paused, and its limits."""

    name: str
    paused: bool
    limits: QueueLimitsInfo = Field(default_factory=QueueLimitsInfo)
    counts: dict[JobState, int]
    oldest_queued_at: datetime | None = Field(
        default=None, description="The longest-waiting due job's run_at."
    )
    finished_last_hour: int = Field(default=0, description="Jobs that ended in the last hour.")
    waiting_for_unknown_task: int = Field(
        default=0,
        description="Queued jobs whose task no live worker has registered: they wait, unattempted, "
        "for a process that knows the task (a rolling deploy under way, or no worker runs it).",
    )
    waiting: dict[WaitingOn, int] = Field(
        default_factory=dict,
        description="Jobs not started yet by why (a job's waiting_on, counted per queue): 'dependencies' "
        "counts its waiting steps, 'run_at' its jobs due later; a due job is counted under the first "
        "of paused, unknown_task, and the queue's rate_limit or global_concurrency that holds; else "
        "under its key's rate_limit or key_concurrency. Reasons with no job are left out.",
    )


class JobSearch(BaseModel):
    """A page of a bounded search: the jobs found newest first among the ids ``searched_from`` to
    ``searched_to``; ``next_cursor`` (a ``before_id``) goes on below them, None once at the first."""

    items: list[Job]
    searched_from: int
    searched_to: int
    next_cursor: int | None


class FailureGroup(BaseModel):
    """Failed jobs of one task that ended with one error type."""

    task: str
    error_type: str
    count: int = Field(description="Its jobs among the newest 10,000 failed jobs (the ones grouped).")
    last_failed_at: datetime | None
    last_message: str | None
    job_ids: list[int] = Field(description="The newest of them, newest first.")


class ResolvedJob(NamedTuple):
    """A job on its way in, validated against its task, the task's defaults filled in (a plain
    enqueue's and a workflow step's alike). A tuple: built once per job of a bulk enqueue, so it
    must be cheap."""

    queue: str
    task: str
    args: dict[str, Any]
    priority: int
    max_attempts: int
    timeout_s: float | None
    concurrency_key: str | None = None


class ClaimedJob(NamedTuple):
    """A job a worker has just claimed: what the executor needs, nothing more. A tuple: built for
    every job claimed, in a third of a frozen dataclass's time."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_s: float | None
    priority: int
    origin: dict[str, Any] | None = None
    run_at: datetime | None = None  # when it was due (the wait metric starts there)
    workflow_id: int | None = None  # a workflow's step: it reads its dependencies' results first
    shard: int = 0  # its row's shard: its outcome and heartbeat name it

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> ClaimedJob:
        return cls(
            record["id"],
            record["queue"],
            record["task"],
            record["args"],
            record["attempts"],
            record["max_attempts"],
            record["timeout_s"],
            record["priority"],
            record["origin"],
            record["run_at"],
            record["workflow_id"],
            record["shard"],
        )
