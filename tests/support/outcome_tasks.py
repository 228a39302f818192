"""Tasks for Snooze and for idempotent child enqueues (tests/integration/test_snooze_expiry.py)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from skiplock import Context, Snooze, task
from tests.support.tasks import FAST


class Snoozes(BaseModel):
    times: int = Field(ge=0)  # snooze on each of the first `times` runs
    seconds: float = Field(ge=0)


@task("snoozes", args=Snoozes, backoff=FAST, max_attempts=1)
async def snoozes(ctx: Context, args: Snoozes) -> dict[str, int]:
    if ctx.job.attempt <= args.times:
        raise Snooze(args.seconds)
    return {"attempt": ctx.job.attempt, "max_attempts": ctx.job.max_attempts}


@task("snoozes_in_thread", args=Snoozes, backoff=FAST, max_attempts=1)
def snoozes_in_thread(ctx: Context, args: Snoozes) -> dict[str, int]:
    time.sleep(0.01)
    if ctx.job.attempt <= args.times:
        raise Snooze(args.seconds)
    return {"attempt": ctx.job.attempt, "max_attempts": ctx.job.max_attempts}


class Children(BaseModel):
    keys: list[str | None]  # one ctx.enqueue per item: its key=, or none
    fail_attempts: int = 1  # fail after enqueueing on each of the first runs
    unique_key: str | None = None  # of every child
    in_transaction: bool = False  # each enqueue in a transaction of the task's own (conn=)


@task("enqueues_children", args=Children, backoff=FAST, max_attempts=5)
async def enqueues_children(ctx: Context, args: Children) -> list[list[int | bool]]:
    """Enqueues a noop child (queue 'nobody': never run) per key, then fails on early attempts."""
    made = []
    for key in args.keys:
        if args.in_transaction:
            async with ctx.pool.acquire() as conn, conn.transaction():
                child = await ctx.enqueue(
                    "noop", queue="nobody", key=key, unique_key=args.unique_key, conn=conn
                )
        else:
            child = await ctx.enqueue("noop", queue="nobody", key=key, unique_key=args.unique_key)
        made.append([child.id, child.created])
    if ctx.job.attempt <= args.fail_attempts:
        raise RuntimeError(f"failed after enqueueing, attempt {ctx.job.attempt}")
    return made
