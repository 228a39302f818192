"""skiplock: background jobs, progress and cron on PostgreSQL alone."""

from __future__ import annotations

from skiplock._connect import connect
from skiplock._version import __version__
from skiplock.app import create_app
from skiplock.errors import (
    JobCancelled,
    JobFailed,
    PermanentJobError,
    ResultTimeout,
    SkiplockError,
    Snooze,
    WorkflowFailed,
)
from skiplock.queue import (
    Backoff,
    Client,
    Context,
    Job,
    JobHandle,
    JobState,
    Step,
    Task,
    Workflow,
    chain,
    chord,
    group,
    task,
)
from skiplock.settings import Settings

__all__ = [
    "Backoff",
    "Client",
    "Context",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobHandle",
    "JobState",
    "PermanentJobError",
    "ResultTimeout",
    "Settings",
    "SkiplockError",
    "Snooze",
    "Step",
    "Task",
    "Workflow",
    "WorkflowFailed",
    "__version__",
    "chain",
    "chord",
    "connect",
    "create_app",
    "group",
    "task",
]
