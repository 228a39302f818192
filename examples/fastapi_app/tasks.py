"""The example's task: prepares an order in steps, reporting its progress after each."""

from __future__ import annotations

from pydantic import BaseModel

from skiplock import Context, task

STEPS = ("reserve stock", "charge card", "print label")


class PrepareOrder(BaseModel):
    order_id: int


@task("prepare_order", args=PrepareOrder, max_attempts=3)
async def prepare_order(ctx: Context, args: PrepareOrder) -> dict[str, int | str]:
    """Each step done moves the job's progress on (what GET /orders/{id} shows)."""
    for done, step in enumerate(STEPS, start=1):
        # ... the step's real work goes here ...
        await ctx.progress(done / len(STEPS), step)
    await ctx.pool.execute("UPDATE orders SET status = 'prepared' WHERE id = $1", args.order_id)
    return {"order_id": args.order_id, "label": f"ORDER-{args.order_id:06d}"}
