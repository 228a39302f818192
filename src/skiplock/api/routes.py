"""The JSON API's route handlers, one controller per resource: what an application mounts."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from skiplock.api.bulk import BulkController
from skiplock.api.events import EventController, all_events_ws, job_events_ws
from skiplock.api.fetch import FetchController, RecordController
from skiplock.api.health import health, ready
from skiplock.api.imports import ImportController
from skiplock.api.jobs import JobController
from skiplock.api.metrics import MetricsController
from skiplock.api.pages import page
from skiplock.api.queues import QueueController, TaskController, failures
from skiplock.api.results import JobResultController, WorkflowResultController
from skiplock.api.schedules import ScheduleController
from skiplock.api.stats import StatsController
from skiplock.api.workers import WorkerController
from skiplock.api.workflows import WorkflowController


def api_routes() -> list[ControllerRouterHandler]:
    """Every handler of the JSON API, websockets, health and metrics included (not the dashboard)."""
    return [
        BulkController,
        JobController,
        JobResultController,
        WorkflowController,
        WorkflowResultController,
        ScheduleController,
        ImportController,
        EventController,
        QueueController,
        TaskController,
        WorkerController,
        StatsController,
        failures,
        FetchController,
        RecordController,
        page,
        job_events_ws,
        all_events_ws,
        health,
        ready,
        MetricsController,
    ]
