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


class Burn(BaseModel):
    ms: float = 10.0


#: Turns of ``sum(range(100))`` in a millisecond of one core of the reference machine (calibrated
#: once): a fixed amount of work, not a wall-clock loop, so threads sharing the GIL do the same work.
_TURNS_PER_MS = 1700


def _burn(ms: float) -> None:
    for _ in range(int(ms * _TURNS_PER_MS)):
        sum(range(100))


@task("bench_cpu_process", args=Burn, executor="process")
def bench_cpu_process(ctx: Context, args: Burn) -> None:
    """``ms`` of pure-Python CPU work in a child of the task process pool."""
    _burn(args.ms)


@task("bench_cpu_thread", args=Burn)
def bench_cpu_thread(ctx: Context, args: Burn) -> None:
    """The same work on the engine's threads (one GIL for all of them, and for the event loop)."""
    _burn(args.ms)
