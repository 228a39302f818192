"""Tasks of the testing kit's own tests (tests/integration/test_testing_kit.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from skiplock import Backoff, Context, Task, task


class Resize(BaseModel):
    url: str
    width: int = 320


@task("kit_resize", args=Resize, queue="kit_media")
async def resize(ctx: Context, args: Resize) -> dict[str, int]:
    await ctx.enqueue("kit_notify", {"url": args.url})
    return {"width": args.width}


class Notify(BaseModel):
    url: str


@task("kit_notify", args=Notify)
async def notify(ctx: Context, args: Notify) -> str:
    return f"notified {args.url}"


class Flaky(BaseModel):
    fail_times: int = 1


@task("kit_flaky", args=Flaky, max_attempts=3, backoff=Backoff(base_s=600, max_s=600, jitter=0))
async def flaky(ctx: Context, args: Flaky) -> int:
    if ctx.job.attempt <= args.fail_times:
        raise RuntimeError(f"attempt {ctx.job.attempt} fails")
    return ctx.job.attempt


class Nothing(BaseModel):
    pass


@task("kit_hourly", args=Nothing, schedule="0 * * * *")
async def hourly(ctx: Context, args: Nothing) -> str:
    return "tick"


KIT_TASKS: list[Task[Any]] = [resize, notify, flaky, hourly]
