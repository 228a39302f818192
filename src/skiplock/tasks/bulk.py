"""bulk_jobs: the job that retries, cancels or deletes many jobs a batch at a time (POST /jobs/bulk,
the dashboard's bulk actions), its progress the share of the matched jobs walked."""

from __future__ import annotations

from typing import Any

from skiplock.queue import bulk
from skiplock.queue.bulk import BulkPlan
from skiplock.queue.context import Context
from skiplock.queue.tasks import MAX_PRIORITY, task


# Ahead of every other job of its queue: a bulk cancel of a backlog must not wait behind it.
# Internal: only Client.bulk enqueues it, after checking the caller may (a plan by hand could
# delete what its key may not).
@task(bulk.BULK_TASK, args=BulkPlan, priority=MAX_PRIORITY, internal=True)
async def bulk_jobs(ctx: Context, args: BulkPlan) -> dict[str, Any]:
    """Apply ``args.action`` to the jobs it names or matched, a batch a transaction; the counts."""

    async def progress(seen: int, done: int) -> None:
        fraction = seen / args.matched if args.matched else 1.0
        await ctx.progress(min(fraction, 1.0), f"{seen:,} of {args.matched:,} seen, {done:,} done")

    outcome = await bulk.run(ctx.pool, args, progress)
    await ctx.progress(1.0, f"{outcome['done']:,} of {args.matched:,} done, {outcome['skipped']:,} skipped")
    return outcome
