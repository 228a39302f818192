"""A task only a "newer" release has: worker subprocesses that list this module in
SKIPLOCK_TASK_MODULES know it, the others (an older replica in a rolling deploy) do not.

Never imported by the test process itself: it would join every in-process registry."""

from __future__ import annotations

from pydantic import BaseModel

from skiplock import Context, task


class NewArgs(BaseModel):
    marker: str = "newer"


@task("newer_task", args=NewArgs)
async def newer_task(ctx: Context, args: NewArgs) -> dict[str, str]:
    """Records each execution in test_runs (unique per job, marker and attempt)."""
    await ctx.pool.execute(
        "INSERT INTO test_runs (job_id, marker, attempt) VALUES ($1, $2, $3)",
        ctx.job.id,
        args.marker,
        ctx.job.attempt,
    )
    return {"marker": args.marker}
