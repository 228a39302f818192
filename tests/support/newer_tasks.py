"""A task only a "newer" release has: worker subprocesses that list this module in
SKIPLOCK_TASK_MODULES know it, the others (an older replica in a rolling deploy) do not.

Never imported by the test process itself: it would join every in-process registry."""

from __future__ import annotations

from skiplock import Context, task
from tests.support.tasks import Marker, record_run


@task("newer_task", args=Marker)
async def newer_task(ctx: Context, args: Marker) -> dict[str, str]:
    """``record_run`` under a name only newer workers know: each execution recorded in test_runs."""
    result: dict[str, str] = await record_run(ctx, args)
    return result
