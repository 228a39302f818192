"""The demo task: sleeps in steps, reporting progress after each, and can be told to fail."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from skiplock.queue.context import Context
from skiplock.queue.tasks import task


class SleepArgs(BaseModel):
    seconds: float = Field(ge=0, le=3600, description="Total time to sleep.")
    steps: int = Field(default=10, ge=1, le=10_000, description="Progress reports along the way.")
    fail: bool = Field(default=False, description="Raise at the end instead of succeeding.")


class SleepFailed(Exception):
    """Raised by the sleep task when asked to fail."""


@task("sleep", args=SleepArgs)
async def sleep(ctx: Context, args: SleepArgs) -> dict[str, float]:
    """Sleep ``seconds`` in ``steps`` equal steps, reporting progress after each."""
    for step in range(1, args.steps + 1):
        await asyncio.sleep(args.seconds / args.steps)
        await ctx.progress(step / args.steps, f"step {step} of {args.steps}", current=step, total=args.steps)
    if args.fail:
        raise SleepFailed(f"failed on purpose after {args.seconds:g}s")
    return {"slept": args.seconds}
