"""A task's Context hands it its job, its events, its enqueues, the shared HTTP session and its
pool: nothing that acts on other jobs or queues (no Client)."""

from __future__ import annotations

from typing import Any, cast

from skiplock.queue import Context, JobInfo

SURFACE = {"enqueue", "http", "job", "log", "log_nowait", "pool", "progress", "report_progress", "upstream"}


async def test_a_tasks_context_offers_only_its_own_job_and_tools() -> None:
    ctx = Context(
        JobInfo(1, "sleep", "default", 1, 3),
        client=cast(Any, object()),
        on_event=lambda *_: None,
        http=cast(Any, object()),
    )
    assert {name for name in dir(ctx) if not name.startswith("_")} == SURFACE
