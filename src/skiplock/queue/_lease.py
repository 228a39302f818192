"""Fenced leases: a run goes on only while this process surely holds its lease.

A lease written by a statement sent at local time t0 (monotonic, read *before* sending) for L
seconds holds in the database until at least t0 + L, since the server's ``now()`` comes later.
So the run is surely ours until t0 + L - margin (:func:`lease_deadline`); past that, this process
stops it itself (fencing), before any rescuer can take the job: its coroutine is cancelled, its
outcome void, nothing more of it written. A process that was paused (SIGSTOP, a frozen VM) finds
its clock past the deadline on waking, and :func:`fenced` stops the run before it takes a step.

The heartbeat has a connection of its own (nothing the pool serves can starve it) and sends one
statement for every lease of a shard (one for all of them while every queue is in shard 0), checked
against the attempt; a run missing from its answer is stopped at once. It is sent every third of a
lease, and a failed one is retried within a quarter second.
It renews the outcomes still waiting in the completer too (a rescue would re-run a finished job
and discard its outcome), and hands back the rows this process holds but no longer runs.

Outages: a rescuer takes only a lease that expired more than :func:`lease_hold` (H) ago
(``job_rescue_pick``). So while its heartbeat fails, whatever the reason (the server restarting,
a proxy or a firewall refusing this process alone, a half-open connection), a run may be held past
its normal deadline, but by H at most: until its last renewal's t0 + L - margin + H, which is
before any rescuer may act (the lease holds until t0 + L, then H more). Live workers keep their
runs through an outage shorter than that and renew them when the server is back; only the jobs of
workers that really died are run again. A longer outage fences the runs: that is the honest limit.
Nothing here reads the server's clock or its start time. Cancel requests arrive by NOTIFY and are
also polled every second (notifications are hints).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

import asyncpg
import structlog

from skiplock.db.pool import Limits, close_quietly, connect
from skiplock.queue._running import RunningJob, RunningJobs, StopReason
from skiplock.queue._statements import JOBS, JobHeartbeat, notify_requeued, renew_leases
from skiplock.queue._threads import ThreadExit
from skiplock.service import Recovery, StopSignal

log = structlog.get_logger("skiplock.lease")

T = TypeVar("T")


def lease_margin(lease_s: float) -> float:
    """How long before a lease's end in the database its run is stopped here: time for the stop
    to land, and for the clock check to run (a fifth of the lease, between 0.2 and 5 s)."""
    return min(max(lease_s * 0.2, 0.2), 5.0)


def lease_deadline(sent_at: float, lease_s: float) -> float:
    """The last moment (monotonic) a lease written by a statement sent at ``sent_at`` surely holds."""
    return sent_at + lease_s - lease_margin(lease_s)


#: The least hold (see lease_hold): a server restart or a failover takes seconds, whatever the lease.
HOLD_FLOOR_S = 5.0


def lease_hold(lease_s: float) -> float:
    """How long past its normal deadline a run may be held while its heartbeat fails, and how
    long past a lease's expiry a rescuer waits before taking it: one lease, at least 5 s (with a
    1 s lease an outage of 2 leases, the server's start included, is within it)."""
    return max(lease_s, HOLD_FLOOR_S)


#: A fenced run that still goes on this long after its cleanup (it swallows every cancel) is closed.
FENCE_CLOSE_S = 1.0


def fenced(run: Coroutine[Any, Any, T], running: RunningJob) -> Coroutine[Any, Any, T]:
    """Drive a job's ``run`` so that it never takes a step past its lease's deadline: it is
    stopped (``LEASE_LOST``) instead. The clock is read before each resumption, so this also
    holds after a pause, whatever order the woken loop runs its callbacks in.

    Stopped for good, not once: the first CancelledError may be swallowed (3.11's ``wait_for``
    returns its inner result when that is done; a task may catch it and go on). After it, the run
    has ``running.cleanup_s`` for its cleanup; from then on every await it makes is cancelled at
    once (a step that was pending resumes with CancelledError), and one that still goes on a
    second later is closed. The executor's own wait for a thread is spared (a thread cannot be
    stopped; its job waits for it).

    It is the job task's coroutine itself, so what the task throws in (``throw``) is told apart
    from closing it (``close``): a GeneratorExit a future completed with is passed on to the run
    as an ordinary failure (carried as :class:`ThreadExit`, as from a thread: thrown into a
    coroutine as it is, every frame awaiting would read it as being closed, the outcome lost)."""
    return _Fenced(run, running)


class _Fenced(Coroutine[Any, Any, T]):
    __slots__ = ("_interrupted", "_run", "_running", "_started")

    def __init__(self, run: Coroutine[Any, Any, T], running: RunningJob) -> None:
        self._run = run
        self._running = running
        self._started = False  # the first step is the run's own: it cleans up only once it has begun
        self._interrupted = False  # a CancelledError reached the run since it was fenced

    def __await__(self) -> Generator[Any, None, T]:
        return self  # an iterator with send and throw, as a generator is

    def __iter__(self) -> _Fenced[T]:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        return self._step(value, None)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        error: BaseException = typ if isinstance(typ, BaseException) else (typ() if val is None else val)
        if isinstance(error, GeneratorExit):  # thrown in by the task, not our own close()
            error = ThreadExit(error)
        return self._step(None, error)

    def close(self) -> None:
        self._run.close()

    def _step(self, value: Any, error: BaseException | None) -> Any:
        run, running = self._run, self._running
        now = time.monotonic()
        if self._started and not running.fenced and now >= running.valid_until:
            running.fence(now)
        spared = not running.fenced or running.waiting_for_thread
        hard = not spared and self._interrupted and now >= running.fenced_at + running.cleanup_s
        if hard and now >= running.fenced_at + running.cleanup_s + FENCE_CLOSE_S:
            _close(run, running)
            raise asyncio.CancelledError()
        if self._started and error is None and not spared and (hard or not self._interrupted):
            error = asyncio.CancelledError()
        if (
            not self._started
            and running.stop_reason is not None
            and isinstance(error, asyncio.CancelledError)
        ):
            # Stopped before its first step (a cancel or the shutdown landed between the claim and
            # it): thrown into a coroutine not begun, it would end without the run's cleanup (no
            # outcome, the job tracked here forever). It begins instead, and finds its stop reason.
            error = None
        self._started = True
        if running.fenced and isinstance(error, asyncio.CancelledError):
            self._interrupted = True
        # Its StopIteration (the run returned) and what it raises end the job's task, as they come.
        step = run.send(value) if error is None else run.throw(error)
        if hard and not running.waiting_for_thread and isinstance(step, asyncio.Future):
            step.cancel()  # past the cleanup, no await of the run completes any more
        return step


def _close(run: Coroutine[Any, Any, Any], running: RunningJob) -> None:
    log.warning("job_fenced_run_closed", job_id=running.job.id, reason="it went on after being stopped")
    with contextlib.suppress(RuntimeError):  # it awaited while being closed: no more steps anyway
        run.close()


class LeaseKeeper:
    name = "lease_keeper"

    def __init__(
        self,
        dsn: str,
        *,
        owner: str,
        running: RunningJobs,
        lease_s: float,
        limits: Limits | None = None,
        transaction_pooler: bool = False,
        cancel_poll_s: float = 1.0,
        outcomes: Callable[[], dict[int, int]] | None = None,
        outcome_shards: Callable[[], dict[int, int]] | None = None,
    ) -> None:
        self.dsn = dsn
        self.owner = owner
        self.running = running
        self.lease_s = lease_s
        self.limits = limits or Limits()
        self.transaction_pooler = transaction_pooler
        self.hold_s = lease_hold(lease_s)
        self.heartbeat_s = lease_s / 3
        self.statement_timeout_s = max(self.heartbeat_s, 1.0)  # of each heartbeat and cancel poll
        self.retry_s = min(0.25, lease_s / 10)
        self.tick_s = min(0.1, lease_margin(lease_s) / 2)
        self.cancel_poll_s = cancel_poll_s
        #: Job id → attempt of the outcomes not written yet: their leases are renewed too.
        self.outcomes = outcomes or dict
        #: Job id → shard of those outcomes.
        self.outcome_shards = outcome_shards or dict
        self._conn: asyncpg.Connection | None = None
        self._stop = StopSignal()

    def cancel(self, payload: str) -> None:
        """Listener hook for ``cancel:<id>``."""
        if payload.isdigit() and self.running.stop(int(payload), StopReason.CANCELLED):
            log.info("job_cancel_requested", job_id=int(payload))

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._fence_loop(), name="skiplock:lease_fence")
                group.create_task(self._heartbeat_loop(), name="skiplock:heartbeat")
        finally:
            await self._disconnect()

    async def _fence_loop(self) -> None:
        """Stops every run whose deadline passed, whatever the heartbeat is doing meanwhile."""
        recovery = Recovery("lease_fence", self._stop, first_s=self.tick_s, max_s=self.tick_s)
        while not await self._stop.sleep(self.tick_s):
            try:
                for job_id in self.running.fence_expired(time.monotonic()):
                    log.warning("job_lease_fenced", job_id=job_id, reason="lease not renewed in time")
            except Exception as exc:
                if await recovery.failed(exc):
                    return

    async def _heartbeat_loop(self) -> None:
        recovery = Recovery(self.name, self._stop, first_s=self.retry_s, max_s=self.retry_s)
        next_heartbeat = next_cancel_poll = time.monotonic()
        while not self._stop.is_set:
            now = time.monotonic()
            try:
                if now >= next_heartbeat:
                    await self._heartbeat()
                    next_heartbeat = now + self.heartbeat_s
                if now >= next_cancel_poll:
                    await self._poll_cancels()
                    next_cancel_poll = now + self.cancel_poll_s
                recovery.succeeded()
            except Exception as exc:
                await self._disconnect()
                if await recovery.failed(exc):  # then the same again, soon: it is not yet done
                    return
                continue
            if await self._stop.sleep(min(next_heartbeat, next_cancel_poll) - time.monotonic()):
                return

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await connect(
                self.dsn,
                limits=self.limits,
                application_name="skiplock-lease",
                transaction_pooler=self.transaction_pooler,
            )
            try:
                await self._warm(conn)
            except BaseException:
                await close_quietly(conn, wait_s=0.5)
                raise
            self._conn = conn
        return self._conn

    async def _warm(self, conn: asyncpg.Connection) -> None:
        """A statement's first use on a connection takes several round trips (its parameter and
        row types are looked up): 1.6 s for the heartbeat's where a round trip takes 0.2 s. They are
        used once here, with nothing to change, under the connect limit, so the statement limit (a
        third of the lease) only has to cover the statement itself: else, on a slow database, every
        heartbeat was cut, and its connection dropped, before its statement could be sent."""
        limit = self.limits.connect_s
        await conn.fetch(JOBS.job_heartbeat, [], self.owner, self.lease_s, [], 0, timeout=limit)
        await conn.fetch(JOBS.job_cancel_requested, [], timeout=limit)
        if not self.transaction_pooler:  # its types at least (it runs for real every round)
            await conn.prepare(JOBS.job_release_untracked, timeout=limit)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn, wait_s=0.5)

    async def _heartbeat(self) -> None:
        sent_at = time.monotonic()
        leases = self.running.leases(sent_at)
        # Finished runs whose outcome is not written yet: a rescue would re-run them and discard it.
        outcomes = self.outcomes()
        sent = {**outcomes, **leases}
        if not sent:
            await self._release_untracked(outcomes)
            return
        try:
            conn = await self._connection()
            kept: set[int] = set()
            for shard, ids in self._by_shard(sent).items():
                kept |= await renew_leases(
                    conn,
                    JobHeartbeat(
                        ids=ids,
                        owner=self.owner,
                        lease_s=self.lease_s,
                        attempts=[sent[i] for i in ids],
                        shard=shard,
                    ),
                    statement_timeout_s=self.statement_timeout_s,
                )
        except Exception:
            # No rescuer takes a lease before it has been expired for the hold: the runs still ours
            # now are held, at most that long past their last renewal (see the module's docstring).
            held = self.running.leases(time.monotonic())
            self.running.hold(
                {i: a for i, a in leases.items() if held.get(i) == a}, self._deadline(sent_at), self.hold_s
            )
            raise
        self.running.renew({i: a for i, a in leases.items() if i in kept}, self._deadline(sent_at))
        current = self.running.attempts()
        for job_id, attempt in leases.items():
            # One finished and claimed again meanwhile is a new attempt: only the one sent is stopped.
            if job_id not in kept and current.get(job_id) == attempt:
                self.running.stop(job_id, StopReason.LEASE_LOST)
                log.warning("job_lease_lost", job_id=job_id, attempt=attempt)
        await self._release_untracked(outcomes)

    def _by_shard(self, sent: dict[int, int]) -> dict[int, list[int]]:
        """The ids sent, by shard: one heartbeat statement reads one shard."""
        shard_of = {**self.outcome_shards(), **self.running.shards()}
        by_shard: dict[int, list[int]] = {}
        for job_id in sent:
            by_shard.setdefault(shard_of.get(job_id, 0), []).append(job_id)
        return by_shard

    async def _release_untracked(self, outcomes: dict[int, int]) -> None:
        """Hand back the rows this process holds as running but no longer runs (a fenced run that
        returned, a claim never started) half a lease after their lease ran out, before any rescuer
        may (a hold later, see lease_hold)."""
        conn = await self._connection()
        rows = await conn.fetch(
            JOBS.job_release_untracked,
            self.owner,
            [*self.running.ids(), *outcomes],
            self.lease_s / 2,
            timeout=self.statement_timeout_s,
        )
        if rows:
            await notify_requeued(conn, rows)
            log.warning("untracked_jobs_released", job_ids=[r["id"] for r in rows])

    def _deadline(self, sent_at: float) -> float:
        return lease_deadline(sent_at, self.lease_s)

    async def _poll_cancels(self) -> None:
        ids = self.running.ids()
        if ids:
            conn = await self._connection()
            for record in await conn.fetch(JOBS.job_cancel_requested, ids, timeout=self.statement_timeout_s):
                self.running.stop(record["id"], StopReason.CANCELLED)

    async def stop(self) -> None:
        self._stop.set()
