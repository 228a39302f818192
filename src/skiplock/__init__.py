"""skiplock: background jobs, progress and cron on PostgreSQL alone."""

from __future__ import annotations

from skiplock._version import __version__
from skiplock.app import create_app
from skiplock.errors import PermanentJobError, SkiplockError
from skiplock.queue import Backoff, Client, Context, Job, JobState, Task, task
from skiplock.settings import Settings

__all__ = [
    "Backoff",
    "Client",
    "Context",
    "Job",
    "JobState",
    "PermanentJobError",
    "Settings",
    "SkiplockError",
    "Task",
    "__version__",
    "create_app",
    "task",
]
