"""Tasks the tests run, in-process and in worker subprocesses (SKIPLOCK_TASK_MODULES)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from skiplock import Backoff, Context, PermanentJobError, task
from skiplock.errors import SkiplockError

FAST = Backoff(base_s=0.05, max_s=0.2, jitter=0.0)


class NoArgs(BaseModel):
    pass


class Marker(BaseModel):
    marker: str = "x"


class Seconds(BaseModel):
    seconds: float = Field(ge=0)


@task("noop", args=NoArgs)
async def noop(ctx: Context, args: NoArgs) -> None:
    """Does nothing."""


async def record(ctx: Context, marker: str) -> None:
    """This run in test_runs, unique per job, marker and attempt: a second execution fails loudly."""
    await ctx.pool.execute(
        "INSERT INTO test_runs (job_id, marker, attempt) VALUES ($1, $2, $3)",
        ctx.job.id,
        marker,
        ctx.job.attempt,
    )


@task("record_run", args=Marker)
async def record_run(ctx: Context, args: Marker) -> dict[str, str]:
    """Inserts its job id into runs (unique): a second execution of a job fails loudly."""
    await record(ctx, args.marker)
    return {"marker": args.marker}


@task("always_fails", args=NoArgs, backoff=FAST)
async def always_fails(ctx: Context, args: NoArgs) -> None:
    raise RuntimeError(f"boom on attempt {ctx.job.attempt}")


@task("fails_permanently", args=NoArgs, backoff=FAST)
async def fails_permanently(ctx: Context, args: NoArgs) -> None:
    raise PermanentJobError("this input can never work")


class DomainFailure(SkiplockError):
    """A task's own error; whether a retry may cure it is all the engine reads of it."""


class DomainChoice(BaseModel):
    retryable: bool


@task("fails_by_domain_error", args=DomainChoice, backoff=FAST)
async def fails_by_domain_error(ctx: Context, args: DomainChoice) -> None:
    error = DomainFailure(f"attempt {ctx.job.attempt}")
    error.retryable = args.retryable
    raise error


@task("fails_once", args=NoArgs, backoff=FAST)
async def fails_once(ctx: Context, args: NoArgs) -> dict[str, int]:
    if ctx.job.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": ctx.job.attempt}


@task("hang_first_attempt", args=NoArgs)
async def hang_first_attempt(ctx: Context, args: NoArgs) -> dict[str, int]:
    """Signals it started, then hangs on attempt 1 (to be killed); later attempts return."""
    await ctx.pool.execute(
        "INSERT INTO test_runs (job_id, marker, attempt) VALUES ($1, 'started', $2)",
        ctx.job.id,
        ctx.job.attempt,
    )
    if ctx.job.attempt == 1:
        await asyncio.sleep(3600)
    return {"attempt": ctx.job.attempt}


@task("wait", args=Seconds)
async def wait(ctx: Context, args: Seconds) -> dict[str, float]:
    """Sleeps, reporting that it started through progress."""
    await ctx.progress(0.0, "started")
    await asyncio.sleep(args.seconds)
    return {"slept": args.seconds}


@task("blocking", args=Seconds)
def blocking(ctx: Context, args: Seconds) -> dict[str, str]:
    """A plain def: must run in a thread without blocking the loop."""
    ctx.report_progress(0.5, "halfway")
    time.sleep(args.seconds)
    return {"thread": "done"}


@task("enqueue_child", args=Marker)
async def enqueue_child(ctx: Context, args: Marker) -> dict[str, int]:
    """A pipeline step: hands on to record_run."""
    child = await ctx.enqueue("record_run", {"marker": args.marker})
    return {"child": child.id}


class Chatter(BaseModel):
    lines: int = Field(ge=1)
    size: int = Field(ge=1)
    pause_s: float = 0.0


@task("chatty", args=Chatter)
async def chatty(ctx: Context, args: Chatter) -> dict[str, int]:
    """Logs ``lines`` lines of ``size`` characters each (events larger than a NOTIFY payload)."""
    for n in range(args.lines):
        await ctx.log("line", n=n, text="x" * args.size)
        await asyncio.sleep(args.pause_s)
    return {"lines": args.lines}


class Shape(BaseModel):
    kind: str


@task("returns", args=Shape)
async def returns(ctx: Context, args: Shape) -> object:
    """Returns a value of the asked shape: list, dict, none, huge (an int past 64 bits)."""
    return {"list": [1, [2, 3], {"a": 4}], "dict": {"a": [1, 2]}, "none": None, "huge": 2**70}[args.kind]


THREADS = {"active": 0, "peak": 0}
_THREADS_LOCK = threading.Lock()


@task("slow_thread", args=Seconds, backoff=FAST)
def slow_thread(ctx: Context, args: Seconds) -> dict[str, int]:
    """A plain def that outlives its timeout: counts how many of its threads run at once."""
    with _THREADS_LOCK:
        THREADS["active"] += 1
        THREADS["peak"] = max(THREADS["peak"], THREADS["active"])
    try:
        time.sleep(args.seconds)
    finally:
        with _THREADS_LOCK:
            THREADS["active"] -= 1
    return {"attempt": ctx.job.attempt}


class Reports(BaseModel):
    count: int = Field(ge=1)
    seconds: float = Field(ge=0)


@task("busy_progress", args=Reports)
async def busy_progress(ctx: Context, args: Reports) -> None:
    """Reports progress ``count`` times spread over ``seconds``: far more often than 10 a second."""
    for n in range(1, args.count + 1):
        await ctx.progress(n / args.count, current=n, total=args.count)
        await asyncio.sleep(args.seconds / args.count)


@task("nightly_report", args=NoArgs, schedule="0 3 * * *")
async def nightly_report(ctx: Context, args: NoArgs) -> None:
    """Declared with a schedule in code (the Beat one-liner)."""


class Raise(BaseModel):
    kind: str = Field(
        pattern="^(system_exit|keyboard_interrupt|generator_exit|cancelled|broken_str|timeout)$"
    )


class BrokenStr(Exception):
    """An exception whose ``__str__`` itself raises (user code does this)."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ fails too")


def _raise(kind: str) -> None:
    errors: dict[str, BaseException] = {
        "system_exit": SystemExit(3),
        "keyboard_interrupt": KeyboardInterrupt(),
        "generator_exit": GeneratorExit(),
        "cancelled": asyncio.CancelledError(),
        "broken_str": BrokenStr(),
        "timeout": TimeoutError("the task's own upstream timed out"),
    }
    raise errors[kind]


@task("raises", args=Raise, backoff=FAST, max_attempts=2)
async def raises(ctx: Context, args: Raise) -> None:
    """Raises what it is told to (SystemExit, its own CancelledError, a broken __str__ …)."""
    await asyncio.sleep(0)
    _raise(args.kind)


@task("raises_in_thread", args=Raise, backoff=FAST, max_attempts=2)
def raises_in_thread(ctx: Context, args: Raise) -> None:
    """The same from a plain def's thread."""
    _raise(args.kind)


#: Each execution of recorded_thread: job id, attempt, thread name, monotonic start and end.
EXECUTIONS: list[dict[str, object]] = []


@task("recorded_thread", args=Seconds, backoff=FAST)
def recorded_thread(ctx: Context, args: Seconds) -> dict[str, int]:
    """A plain def recording each execution; only the first attempt sleeps ``seconds``."""
    row: dict[str, object] = {
        "job_id": ctx.job.id,
        "attempt": ctx.job.attempt,
        "thread": threading.current_thread().name,
        "start": time.monotonic(),
        "end": None,
    }
    with _THREADS_LOCK:
        EXECUTIONS.append(row)
    try:
        if ctx.job.attempt == 1:
            time.sleep(args.seconds)
    finally:
        row["end"] = time.monotonic()
    return {"attempt": ctx.job.attempt}


class ServiceName(BaseModel):
    name: str


@task("kill_service", args=ServiceName)
async def kill_service(ctx: Context, args: ServiceName) -> dict[str, int]:
    """Misbehaving user code: cancels one of the engine's own background services."""
    victims = [t for t in asyncio.all_tasks() if t.get_name() == f"skiplock:{args.name}"]
    for victim in victims:
        victim.cancel()
    return {"cancelled": len(victims)}


class Hostile(BaseModel):
    codepoints: list[int] = Field(default_factory=list)  # chr() of each: NUL and lone surrogates too
    raw: str = ""  # hex of bytes (often not UTF-8), decoded with surrogateescape as CSV lines are
    echo: str = ""  # a value given as is, to come back as stored
    raises: bool = False


@task("hostile", args=Hostile, max_attempts=1)
async def hostile(ctx: Context, args: Hostile) -> object:
    """Reports progress, logs, returns (or raises) a text built from code points and bytes that
    PostgreSQL cannot store as they are."""
    text = "".join(map(chr, args.codepoints)) + bytes.fromhex(args.raw).decode("utf-8", "surrogateescape")
    await ctx.progress(0.5, text)
    fields: dict[str, Any] = {"k" + text: 1}
    await ctx.log(text, value=text, **fields)
    if args.raises:
        raise ValueError("boom:" + text)
    return [text, args.echo, {text: text}]


class Recorded(BaseModel):
    seconds: float = Field(default=0.0, ge=0)
    step_s: float = Field(default=0.05, gt=0)
    #: Hold a connection of the engine's pool (the API's and housekeeping's; tasks have their own)
    #: for the whole run: enough of these starve it.
    hold_connection: bool = False
    report: bool = False  # report progress at each step (events carry the pid)
    linger_s: float = Field(default=0.0, ge=0)  # when stopped, go on working this long (slow to stop)
    #: Record the execution in this other database instead (owner left NULL): a crash test of the
    #: jobs' server, where a record's durable commit would flush the WAL of the claim before it.
    record_dsn: str = ""
    #: Hold a connection of the tasks' pool in an open transaction for the whole run: behind a
    #: transaction pooler that holds one of its server connections (record elsewhere then).
    hold_transaction: bool = False


_RECORD_POOLS: dict[str, asyncpg.Pool] = {}


async def _record_pool(dsn: str) -> asyncpg.Pool:
    if dsn not in _RECORD_POOLS:
        _RECORD_POOLS[dsn] = await asyncpg.create_pool(dsn, min_size=0, max_size=10)
    return _RECORD_POOLS[dsn]


async def close_record_pools() -> None:
    """What an in-process engine's record_dsn runs opened (a worker process's go with it)."""
    while _RECORD_POOLS:
        await _RECORD_POOLS.popitem()[1].close()


@task("record_execution", args=Recorded, backoff=FAST, max_attempts=20)
async def record_execution(ctx: Context, args: Recorded) -> dict[str, int]:
    """Works in steps for ``seconds``, recording this execution in test_executions (see
    tests/support/executions.py): its end is the end of its last step, also when stopped."""
    if args.record_dsn:
        pool = await _record_pool(args.record_dsn)
        if args.hold_transaction:
            async with ctx.pool.acquire() as conn, conn.transaction():
                return await _recorded_run(ctx, args, pool, pool, owner=False)
        return await _recorded_run(ctx, args, pool, pool, owner=False)
    if args.hold_connection:
        # Fault injection: a task is never given the engine's pool; this one reaches it on purpose.
        async with ctx._client.pool.acquire() as conn:
            return await _recorded_run(ctx, args, conn, ctx.pool)
    return await _recorded_run(ctx, args, ctx.pool, ctx.pool)


async def _recorded_run(
    ctx: Context, args: Recorded, db: Any, fallback: Any, *, owner: bool = True
) -> dict[str, int]:
    started = time.time()
    last_work, outcome = started, "stopped"
    try:
        # In the try: a start row that committed but whose reply was lost (a server crash) is
        # ended too, at once, having done no work; else it looks like a run that never ended.
        await db.execute(
            "INSERT INTO test_executions (job_id, attempt, pid, owner, started_at)"
            " SELECT $1, $2, $3, (SELECT lease_owner FROM jobs WHERE id = $1 AND $5), $4",
            ctx.job.id,
            ctx.job.attempt,
            os.getpid(),
            started,
            owner,
        )
        until = started + args.seconds
        while (now := time.time()) < until:
            if args.report:
                message = f"pid {os.getpid()} attempt {ctx.job.attempt}"
                await ctx.progress(min(1.0, (now - started) / args.seconds), message)
            await asyncio.sleep(min(args.step_s, until - now))
            last_work = time.time()
        last_work, outcome = time.time(), "finished"
        return {"attempt": ctx.job.attempt, "pid": os.getpid()}
    except asyncio.CancelledError:
        if args.linger_s:
            await asyncio.shield(asyncio.sleep(args.linger_s))
            last_work = time.time()
        raise
    finally:
        # Shielded: a fenced run's awaits are cut short once its cleanup time is over, but its
        # record's end (the end of its last step of work) is bookkeeping, written whatever happens.
        await asyncio.shield(_record_end(ctx, db, fallback, started, last_work, outcome))


async def _record_end(
    ctx: Context, db: Any, fallback: Any, started: float, ended: float, outcome: str
) -> None:
    """The end of the execution that started at ``started`` (if its start row was written). The
    database may be away (an outage test): keep trying for a while, on the pool if the held
    connection broke."""
    for n in range(150):
        try:
            await (db if n % 2 == 0 else fallback).execute(
                "UPDATE test_executions SET ended_at = $5, outcome = $6"
                " WHERE job_id = $1 AND attempt = $2 AND pid = $3 AND started_at = $4",
                ctx.job.id,
                ctx.job.attempt,
                os.getpid(),
                started,
                ended,
                outcome,
            )
            return
        except Exception:
            await asyncio.sleep(0.2)


class Lines(BaseModel):
    lines: list[str]
    then_wait_s: float = Field(default=0.0, ge=0)


@task("log_lines", args=Lines)
async def log_lines(ctx: Context, args: Lines) -> dict[str, int]:
    """Logs each line as given, then waits ``then_wait_s`` (long enough, and the event writer
    writes them while the job runs; zero, and they go with the outcome)."""
    for line in args.lines:
        await ctx.log(line)
    await asyncio.sleep(args.then_wait_s)
    return {"lines": len(args.lines)}


#: Job id → the monotonic time of each step a stubborn_steps job took (in-process tests).
STEPS: dict[int, list[float]] = {}


class Stubborn(BaseModel):
    seconds: float = Field(ge=0)
    swallow: int = Field(default=1, ge=0)  # how many CancelledErrors it catches and goes on after


@task("stubborn_steps", args=Stubborn, max_attempts=1)
async def stubborn_steps(ctx: Context, args: Stubborn) -> dict[str, int]:
    """Steps of ``asyncio.wait_for(asyncio.sleep(0.01), 5)`` for ``seconds`` (3.11's wait_for
    returns the inner result when a cancel meets it done), each recorded in STEPS; it swallows
    the first ``swallow`` CancelledErrors and goes on."""
    steps = STEPS.setdefault(ctx.job.id, [])
    until = time.monotonic() + args.seconds
    swallowed = 0
    while time.monotonic() < until:
        try:
            await asyncio.wait_for(asyncio.sleep(0.01), 5)
        except asyncio.CancelledError:
            swallowed += 1
            if swallowed > args.swallow:
                raise
        steps.append(time.monotonic())
    return {"steps": len(steps)}


@task("enqueue_in_transaction", args=Seconds)
async def enqueue_in_transaction(ctx: Context, args: Seconds) -> dict[str, int]:
    """Enqueues a child (queue 'nobody') in a transaction of its own, marks 'enqueued' in test_runs,
    then keeps that transaction open ``seconds``."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        child = await ctx.enqueue("noop", queue="nobody", conn=conn)
        await ctx.pool.execute(
            "INSERT INTO test_runs (job_id, marker, attempt) VALUES ($1, 'enqueued', $2)",
            ctx.job.id,
            ctx.job.attempt,
        )
        await asyncio.sleep(args.seconds)
    return {"child": child.id}


@task("awaits_generator_exit", args=NoArgs, max_attempts=1)
async def awaits_generator_exit(ctx: Context, args: NoArgs) -> None:
    """Awaits a future that completes with GeneratorExit later (the task throws it in)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_exception, GeneratorExit())
    await future


#: Job id → what a late_reporting_thread saw: "started", then the error its late enqueue raised.
LATE_THREADS: dict[int, str] = {}


@task("late_reporting_thread", args=Seconds, max_attempts=1)
def late_reporting_thread(ctx: Context, args: Seconds) -> dict[str, bool]:
    """A plain def that sleeps, then reports progress, logs, enqueues a child (queue 'nobody')
    and returns: all of it after its lease may be gone, in the fencing tests."""
    LATE_THREADS[ctx.job.id] = "started"
    time.sleep(args.seconds)
    ctx.report_progress(1.0, "late")
    ctx.log_nowait("late")
    try:
        asyncio.run_coroutine_threadsafe(ctx.enqueue("noop", queue="nobody"), ctx._loop).result(10)
        LATE_THREADS[ctx.job.id] = "enqueued"
    except Exception as exc:
        LATE_THREADS[ctx.job.id] = type(exc).__name__
    return {"late": True}


@task("upstream_order", args=NoArgs)
async def upstream_order(ctx: Context, args: NoArgs) -> list[str]:
    """The names of a workflow step's dependencies as its task sees them (a list keeps order)."""
    return list(ctx.upstream)


class MarkerAndSeconds(BaseModel):
    marker: str = "x"
    seconds: float = Field(default=0.0, ge=0)


@task("record_slowly", args=MarkerAndSeconds)
async def record_slowly(ctx: Context, args: MarkerAndSeconds) -> dict[str, str]:
    """record_run, then a short wait: long enough for a worker to be killed among many of them."""
    await record(ctx, args.marker)
    await asyncio.sleep(args.seconds)
    return {"marker": args.marker}


@task("count_upstream", args=Marker)
async def count_upstream(ctx: Context, args: Marker) -> dict[str, int]:
    """A chord's callback: records its run (a unique row per job and attempt) and counts its inputs."""
    await record(ctx, args.marker)
    return {
        "count": len(ctx.upstream),
        "succeeded": sum(1 for v in ctx.upstream.values() if v == {"marker": "g"}),
    }


class Sized(BaseModel):
    size: int


@task("sum_sizes", args=NoArgs, upstream=Sized)
async def sum_sizes(ctx: Context, args: NoArgs) -> dict[str, Any]:
    """A step that declares its dependencies' results as a model: ctx.upstream holds Sized values."""
    return {
        "total": sum(v.size for v in ctx.upstream.values()),
        "types": sorted({type(v).__name__ for v in ctx.upstream.values()}),
    }


@task("give_size", args=Sized)
async def give_size(ctx: Context, args: Sized) -> dict[str, int]:
    return {"size": args.size}
