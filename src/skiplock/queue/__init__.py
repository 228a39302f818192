"""The job engine on PostgreSQL. No HTTP in here."""

from __future__ import annotations

from skiplock.queue.backoff import Backoff
from skiplock.queue.client import Client, EnqueueRequest
from skiplock.queue.context import Context, JobInfo
from skiplock.queue.engine import Engine
from skiplock.queue.models import Job, JobState, QueueInfo
from skiplock.queue.tasks import Task, TaskRegistry, registered, task

__all__ = [
    "Backoff",
    "Client",
    "Context",
    "Engine",
    "EnqueueRequest",
    "Job",
    "JobInfo",
    "JobState",
    "QueueInfo",
    "Task",
    "TaskRegistry",
    "registered",
    "task",
]
