"""Tasks the process-pool tests run: each job in a child process (executor="process")."""

from __future__ import annotations

import ctypes
import os
import time

from pydantic import BaseModel, Field

from skiplock import Backoff, Context, task

FAST = Backoff(base_s=0.05, max_s=0.2, jitter=0.0)


class Spin(BaseModel):
    seconds: float = Field(ge=0)


class Code(BaseModel):
    code: int = 1


class NoArgs(BaseModel):
    pass


def spin(seconds: float) -> int:
    """Burn CPU for ``seconds`` (pure Python: nothing a cancel or a thread could interrupt)."""
    deadline = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < deadline:
        turns += sum(range(100))
    return turns


@task("proc_spin", args=Spin, executor="process", backoff=FAST)
def proc_spin(ctx: Context, args: Spin) -> dict[str, int]:
    """A CPU loop of ``seconds``: its result names the process that ran it."""
    ctx.log_nowait("spinning", pid=os.getpid())
    spin(args.seconds)
    return {"pid": os.getpid()}


@task("proc_async_spin", args=Spin, executor="process", backoff=FAST)
async def proc_async_spin(ctx: Context, args: Spin) -> dict[str, int]:
    """The same, as an async def: a pool child runs it on a loop of its own."""
    await ctx.progress(0.5, "half")
    spin(args.seconds)
    return {"pid": os.getpid()}


@task("proc_exit", args=Code, executor="process", backoff=FAST)
def proc_exit(ctx: Context, args: Code) -> None:
    """Leaves its process at once, answering nothing."""
    os._exit(args.code)


@task("proc_segfault", args=NoArgs, executor="process", backoff=FAST)
def proc_segfault(ctx: Context, args: NoArgs) -> None:
    """Reads address 0: the process dies of SIGSEGV."""
    ctypes.string_at(0)


@task("proc_chatty", args=NoArgs, executor="process")
def proc_chatty(ctx: Context, args: NoArgs) -> dict[str, int]:
    """Reports progress and logs from its child, then prints (to stderr, not the answers' pipe)."""
    for step in range(1, 4):
        ctx.report_progress(step / 3, f"step {step}", current=step, total=3)
        ctx.log_nowait("step done", step=step, pid=os.getpid())
    print("a task's print does not break the pipe")
    return {"pid": os.getpid()}


@task("proc_uses_pool", args=NoArgs, executor="process")
async def proc_uses_pool(ctx: Context, args: NoArgs) -> None:
    """What a child does not have: the engine's pool."""
    await ctx.pool.execute("SELECT 1")


@task("proc_fails", args=NoArgs, executor="process", max_attempts=2, backoff=FAST)
def proc_fails(ctx: Context, args: NoArgs) -> None:
    """Raises in its child: a failure like any other, its type and traceback kept."""
    raise ValueError(f"bad input on attempt {ctx.job.attempt}")


class Megabytes(BaseModel):
    mb: int = Field(ge=0)


_KEPT: list[bytes] = []


@task("proc_hold_memory", args=Megabytes, executor="process")
def proc_hold_memory(ctx: Context, args: Megabytes) -> dict[str, int]:
    """Keeps ``mb`` more of memory in its process, past the job."""
    _KEPT.append(os.urandom(args.mb * 1024 * 1024))
    return {"pid": os.getpid()}


@task("plain_pid", args=NoArgs)
def plain_pid(ctx: Context, args: NoArgs) -> dict[str, int]:
    """A plain def with no executor: a thread of the engine's process, unless its queue says otherwise."""
    return {"pid": os.getpid()}
