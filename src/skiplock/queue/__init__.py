"""The job engine on PostgreSQL. No HTTP in here."""

from __future__ import annotations

from skiplock.queue.backoff import Backoff
from skiplock.queue.client import Client, EnqueueRequest
from skiplock.queue.context import Context, JobInfo
from skiplock.queue.engine import Engine
from skiplock.queue.handles import JobHandle
from skiplock.queue.models import Job, JobState, QueueInfo
from skiplock.queue.tasks import Task, TaskRegistry, registered, task
from skiplock.queue.workflows import Step, Workflow, WorkflowInfo, chain, chord, group

__all__ = [
    "Backoff",
    "Client",
    "Context",
    "Engine",
    "EnqueueRequest",
    "Job",
    "JobHandle",
    "JobInfo",
    "JobState",
    "QueueInfo",
    "Step",
    "Task",
    "TaskRegistry",
    "Workflow",
    "WorkflowInfo",
    "chain",
    "chord",
    "group",
    "registered",
    "task",
]
