"""Tasks the benchmark runs (loaded by worker subprocesses through SKIPLOCK_TASK_MODULES)."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

from skiplock import Context, task


class NoArgs(BaseModel):
    pass


class Stamped(BaseModel):
    enqueued_at: float  # time.time() just before the enqueue call


@task("bench_noop", args=NoArgs)
async def bench_noop(ctx: Context, args: NoArgs) -> None:
    """Nothing: what is left is the engine's own cost."""


@task("bench_latency", args=Stamped)
async def bench_latency(ctx: Context, args: Stamped) -> dict[str, float]:
    """Records enqueue → start in its result."""
    return {"latency_ms": (time.time() - args.enqueued_at) * 1000}


class Reporting(BaseModel):
    steps: int = 1
    interval_s: float = 0.0


@task("bench_progress", args=Reporting)
async def bench_progress(ctx: Context, args: Reporting) -> None:
    """Reports progress ``steps`` times, ``interval_s`` apart; the message is the call's time."""
    for step in range(1, args.steps + 1):
        await ctx.progress(step / args.steps, repr(time.time()))
        if args.interval_s:
            await asyncio.sleep(args.interval_s)
