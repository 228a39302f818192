"""Tasks the benchmark runs (loaded by worker subprocesses through SKIPLOCK_TASK_MODULES)."""

from __future__ import annotations

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
