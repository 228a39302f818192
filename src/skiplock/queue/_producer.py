"""The claim loop: claims batches sized to free capacity, runs each job as a task it owns.

Wakes on a queue's notification, on freed capacity while a queue still has work, and on a
jittered poll (the truth: notifications are only hints). Stopping stops claiming, lets running
jobs finish within the grace period, then hands the rest back to their queues.

A queue's claims go on where the last one ended (see ClaimHint) rather than from the head of
its index, whose first entries, once claimed, stay dead while a snapshot is open elsewhere.

Claims commit durably: one lost in a server crash would put the job back in its queue while
this process runs it, and another would run it too. Each run starts with its lease's deadline
read from the clock before the claim was sent, and runs fenced (see _lease.py). A claim whose
reply never arrived (the connection broke) may still have committed: after reconnecting, the
jobs it took are handed back, their attempt unused, before anything else is claimed.

A queue with limits across replicas (a global concurrency, a rate limit: see limits.py) is claimed
by job_claim_limited, which takes no more than the limits allow in the queue's turn (one with
per-key limits by job_claim_keyed, which also serves its keys round-robin); the claim of
a queue without them refuses such a queue, so a producer that has not yet heard of a new limit
takes nothing rather than too much. Limits are read at the start, on every poll and at once on
a 'limits:<queue>' notification. Held back by its rate, a queue is claimed again when the
claim said the budget allows (a timer, no polling); held back by its global concurrency, when
this process's completer has written outcomes (the jobs it ran stop counting then: the process
whose jobs ended claims again itself), and at the poll.

Operators steer it through its workers row (see _presence.py): quiet (no claim until resumed),
and a new concurrency (queues without a limit of their own follow it). A producer serving every
queue ('*' in SKIPLOCK_QUEUES) serves a queue from its first notification, and looks for queues
with jobs after each poll's round.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from skiplock.db.pool import AnyConnection, Limits, close_quietly, connect
from skiplock.queue._executor import Executor
from skiplock.queue._lease import fenced, lease_deadline, lease_margin
from skiplock.queue._running import RunningJobs, StopReason
from skiplock.queue._statements import (
    JOBS,
    QUEUES,
    WORKERS,
    JobClaim,
    JobClaimAfter,
    claim_jobs,
    claim_jobs_after,
    claim_jobs_keyed,
    claim_jobs_limited,
    notify_requeued,
)
from skiplock.queue.limits import QueueLimits
from skiplock.queue.models import ClaimedJob
from skiplock.service import Recovery, StopSignal
from skiplock.settings import EVERY_QUEUE

log = structlog.get_logger("skiplock.producer")


@dataclass(frozen=True, slots=True)
class ClaimHint:
    """Where a queue's claims ended: the last claimed job's place in claim order (priority DESC,
    run_at, id). The next claim of that priority starts after it (job_claim_after) instead of
    walking again every entry that earlier claims left dead in the claim index (while a snapshot
    is held open elsewhere vacuum cannot remove them, and each claim would walk them all).

    A job placed before the hint since (a higher priority, an earlier run_at: an enqueue, a
    rescue, a release, a retry come due) is found by a full claim (job_claim_many): the one after
    a notification of its queue, after the poll, after a hinted claim that found fewer jobs than
    it asked for, and at the latest ``poll_interval_s`` after the full claim the hint continues,
    however busy the producer is."""

    priority: int
    run_at: datetime
    id: int
    since: float  # monotonic: when the full claim this hint continues was sent

    @classmethod
    def after(cls, records: Sequence[asyncpg.Record], since: float) -> ClaimHint:
        last = max(records, key=lambda r: (-r["priority"], r["run_at"], r["id"]))
        return cls(last["priority"], last["run_at"], last["id"], since)


class Producer:
    name = "producer"

    def __init__(
        self,
        dsn: str,
        *,
        owner: str,
        queues: dict[str, int],
        concurrency: int,
        lease_s: float,
        poll_interval_s: float,
        shutdown_grace_s: float,
        executor: Executor,
        running: RunningJobs,
        limits: Limits | None = None,
        transaction_pooler: bool = False,
        declared: Mapping[str, int | None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.limits = limits  # the claim connection's time limits (the engine's)
        self.transaction_pooler = transaction_pooler
        self.owner = owner
        #: Queue → the limit SKIPLOCK_QUEUES gives it (None: the concurrency, whatever it is now);
        #: '*': every queue, found from notifications and at each poll.
        self.declared: dict[str, int | None] = dict(declared) if declared is not None else dict(queues)
        self.every_queue = EVERY_QUEUE in self.declared
        self.concurrency = concurrency
        self.configured = dict(queues)  # this process's limit per queue, from its settings
        #: The limit it claims by: the configured one, unless the queue's row sets another.
        self.queue_limits = dict(queues)
        #: Each queue's limits as its row holds them, read again at every poll and on notification.
        self.limits_of: dict[str, QueueLimits] = {}
        #: Each queue's shard (skiplock_shard), read before its first claim: its claims read that
        #: shard alone. A pure function of the queue's name: read once.
        self.shards: dict[str, int] = {}
        self._reload_all = True
        self._reload: set[str] = set()
        self._rate_timers: dict[str, asyncio.TimerHandle] = {}
        #: Queues whose limits held a claim back: claimed again once this process's outcomes are
        #: written (until then its ended jobs still count as running in the database).
        self._held: set[str] = set()
        executor.completer.on_written.append(self._outcomes_written)
        #: Claims nothing while set (POST /workers/{id}/quiet); running jobs go on.
        self.quiet = False
        #: Clear while a claim round runs (its claims may have been sent before it was quiet).
        self._between_rounds = asyncio.Event()
        self._between_rounds.set()
        #: A '*' producer looks for queues it does not know yet after its next round.
        self._discover = self.every_queue
        #: Called when a '*' producer serves a queue it found (the fleet's row shows it at once).
        self.on_queue_found: list[Callable[[], None]] = []
        self.lease_s = lease_s
        self.cleanup_s = lease_margin(lease_s) / 2  # a fenced run's time to clean up
        self.poll_interval_s = poll_interval_s
        self.shutdown_grace_s = shutdown_grace_s
        self.executor = executor
        self.running = running
        #: Only jobs of these tasks are claimed; others wait for a process that knows them.
        self.tasks = sorted(task.name for task in executor.registry)
        self._woken: set[str] = set()
        self._hungry: set[str] = set()
        self._hints: dict[str, ClaimHint] = {}
        #: Wake-ups per queue (notifications, polls): one during a claim voids the hint it would leave.
        self._wakes: Counter[str] = Counter()
        self._wakeup = asyncio.Event()
        self._stop = StopSignal()
        self._stopped_at: float | None = None  # monotonic: the grace period counts from here
        #: A claim was sent and its reply did not arrive: it may have committed all the same.
        self._claim_unsure = False
        #: When the last claim that returned jobs took them (the server's clock): a lost claim's
        #: jobs are the ones this process holds that were taken later.
        self._claimed_at: datetime | None = None
        #: Test signals, waited on by tests only: the poll's timer fired; a claim round ended.
        self.polled = asyncio.Event()
        self.round_done = asyncio.Event()

    def every_queue_limit(self) -> int:
        """The per-process limit of each queue a '*' producer finds."""
        return self._limit_declared(EVERY_QUEUE)

    def _limit_declared(self, queue: str) -> int:
        return min(self.declared.get(queue) or self.concurrency, self.concurrency)

    def _serve(self, queue: str) -> None:
        """A '*' producer serves a queue it found: its limits are read before its first claim."""
        self.declared.setdefault(queue, self.declared.get(EVERY_QUEUE))
        self.configured[queue] = self.queue_limits[queue] = self._limit_declared(queue)
        self._reload.add(queue)
        log.info("queue_found", queue=queue)
        for callback in self.on_queue_found:
            callback()

    def set_quiet(self, quiet: bool) -> None:
        """Claim nothing more (running jobs go on), or claim again at once."""
        if quiet != self.quiet:
            self.quiet = quiet
            log.info("claiming_paused" if quiet else "claiming_resumed")
            if not quiet:
                self.wake_all()

    async def claims_ended(self) -> None:
        """Return once no claim is under way: after :meth:`set_quiet`, nothing more is claimed then
        (a claim sent just before may take jobs committed while it waited for the server)."""
        await self._between_rounds.wait()

    def set_concurrency(self, concurrency: int) -> None:
        """Run up to ``concurrency`` jobs at once from now on; running jobs over it finish."""
        self.concurrency = concurrency
        for name in self.configured:
            self.configured[name] = self._limit_declared(name)
            row = self.limits_of.get(name)
            self.queue_limits[name] = (
                self.configured[name]
                if row is None or row.concurrency is None
                else min(row.concurrency, concurrency)
            )
        log.info("concurrency_changed", concurrency=concurrency)
        self.wake_all()

    def wake(self, queue: str) -> None:
        """A hint that ``queue`` has due jobs (called from the listener callback)."""
        if self.every_queue and queue not in self.queue_limits:
            self._serve(queue)
        if queue in self.queue_limits:
            self._forget_hint(queue)  # what it announces may lie before the hint
            self._woken.add(queue)
            self._wakeup.set()

    def wake_all(self) -> None:
        for queue in self.queue_limits:
            self._forget_hint(queue)
        self._woken.update(self.queue_limits)
        self._reload_all = True  # a poll, a reconnect: a notification of limits may have been lost
        self._discover = self.every_queue
        self._wakeup.set()

    def limits_changed(self, queue: str) -> None:
        """A hint that ``queue``'s limits changed (called from the listener callback)."""
        if queue in self.queue_limits:
            self._reload.add(queue)
            self.wake(queue)

    def _outcomes_written(self) -> None:
        if self._held:
            self._woken.update(self._held)
            self._held.clear()
            self._wakeup.set()

    def _wake_limited(self, queue: str) -> None:
        self._rate_timers.pop(queue, None)
        self._woken.add(queue)
        self._wakeup.set()

    def _forget_hint(self, queue: str) -> None:
        self._hints.pop(queue, None)
        self._wakes[queue] += 1

    async def run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as jobs:
            ready.set()
            self.wake_all()
            recovery = Recovery("claim", self._stop)
            while not self._stop.is_set:
                try:
                    # A connection of its own: claiming never waits for the pool.
                    conn = await connect(
                        self.dsn,
                        limits=self.limits,
                        application_name="skiplock-claim",
                        transaction_pooler=self.transaction_pooler,
                    )
                    try:
                        if self._claim_unsure:
                            await self._release_unrun(conn)
                        while not self._stop.is_set:
                            await self._wait_for_work()
                            if not self._stop.is_set:
                                self._between_rounds.clear()
                                try:
                                    await self._claim_round(conn, jobs)
                                finally:
                                    self._between_rounds.set()
                                recovery.succeeded()
                    finally:
                        await close_quietly(conn)
                except Exception as exc:
                    self.wake_all()
                    if await recovery.failed(exc):
                        break
            await self._drain()

    async def _wait_for_work(self) -> None:
        if not self._woken:
            timeout = self.poll_interval_s * (1 + 0.1 * random.random())
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)
            except TimeoutError:
                self.polled.set()
                self.wake_all()
        self._wakeup.clear()
        # Let completions of the same moment free their slots, so one claim takes them all.
        await asyncio.sleep(0)

    async def _claim_round(self, conn: AnyConnection, jobs: asyncio.TaskGroup) -> None:
        if self.quiet:
            self._woken.clear()
            self.round_done.set()
            return
        if self._reload:  # a notification: the new limits hold from this round on
            await self._load_limits(conn, sorted(self._reload))
        queues, self._woken = self._woken, set()
        unknown = [queue for queue in queues if queue not in self.shards]
        if unknown:
            await self._load_shards(conn, unknown)
        for queue in queues:
            if self.quiet:  # asked while this round awaited: no claim is sent from now on
                break
            free = min(
                self.concurrency - len(self.running),
                self.queue_limits[queue] - self.running.count(queue),
            )
            if free <= 0:
                self._hungry.add(queue)
                continue
            if queue in self.limits_of and self.limits_of[queue].limited:
                claimed, held_back = await self._claim_limited(conn, jobs, queue, free)
                if held_back:
                    self._held.add(queue)
                if claimed == free or held_back:
                    self._hungry.add(queue)
                else:
                    self._hungry.discard(queue)
                continue
            hint = self._fresh_hint(queue)
            claimed = await self._claim(conn, jobs, queue, free, hint)
            if hint is not None and claimed < free and not self.quiet:  # the rest came short: look everywhere
                claimed += await self._claim(conn, jobs, queue, free - claimed, None)
            if claimed == free:
                self._hungry.add(queue)
            else:
                self._hungry.discard(queue)
        if self._reload_all:
            # After the claims (a poll's re-read, for a notification lost): the round's first
            # statement stays its claim, whose failure on a broken connection (unsure whether
            # it committed) hands back what it may have taken (see _release_unrun).
            await self._load_limits(conn, sorted(self.configured))
        if self._discover:
            await self._find_queues(conn)
        self.round_done.set()

    async def _find_queues(self, conn: AnyConnection) -> None:
        """A '*' producer's look for queues with jobs it does not serve yet (a notification of
        theirs may have been lost, or sent before it started): claimed from the next round on."""
        self._discover = False
        for record in await conn.fetch(WORKERS.job_queues_queued):
            queue = record["queue"]
            if queue not in self.queue_limits:
                self._serve(queue)
                self._woken.add(queue)
                self._wakeup.set()

    async def _load_shards(self, conn: AnyConnection, names: list[str]) -> None:
        for record in await conn.fetch(QUEUES.queue_shards, names):
            self.shards[record["name"]] = record["shard"]

    async def _load_limits(self, conn: AnyConnection, names: list[str]) -> None:
        """Read these queues' limits again; a queue whose limits changed is claimed again at once."""
        if len(names) == len(self.configured):
            self._reload_all = False
        self._reload.difference_update(names)
        rows = {r["name"]: QueueLimits.from_record(r) for r in await conn.fetch(QUEUES.queue_limits, names)}
        for name in names:
            limits = rows.get(name, QueueLimits())
            if limits != self.limits_of.get(name, QueueLimits()):
                log.info("queue_limits_read", queue=name, **_fields(limits))
                self._woken.add(name)
                self._wakeup.set()
            self.limits_of[name] = limits
            self.queue_limits[name] = (
                self.configured[name]
                if limits.concurrency is None
                else min(limits.concurrency, self.concurrency)
            )
            if not limits.limited:
                self._cancel_rate_timer(name)

    def _cancel_rate_timer(self, queue: str) -> None:
        timer = self._rate_timers.pop(queue, None)
        if timer is not None:
            timer.cancel()

    async def _claim_limited(
        self, conn: AnyConnection, jobs: asyncio.TaskGroup, queue: str, n: int
    ) -> tuple[int, bool]:
        """Claim up to ``n`` jobs of a queue with limits across replicas and start them: how many,
        and whether its limits held the claim back (it took fewer than it could have)."""
        self._claim_unsure = True
        sent_at = time.monotonic()
        claim = JobClaim(
            queue=queue,
            limit=n,
            owner=self.owner,
            lease_s=self.lease_s,
            now=None,
            tasks=self.tasks,
            excluded=self.running.ids(),
            shard=self.shards[queue],
        )
        keyed = self.limits_of[queue].keyed
        rows = await (claim_jobs_keyed if keyed else claim_jobs_limited)(conn, claim)
        self._claim_unsure = False
        first = rows[0]  # one row at least, always
        if first["next_at"] is not None:  # the rate's budget is spent: claim again when it allows
            self._cancel_rate_timer(queue)
            delay = (first["next_at"] - first["clock"]).total_seconds() + 0.001
            self._rate_timers[queue] = asyncio.get_running_loop().call_later(delay, self._wake_limited, queue)
        records = [r for r in rows if r["id"] is not None]
        if records:
            claimed_at = records[0]["started_at"]
            self._claimed_at = claimed_at if self._claimed_at is None else max(self._claimed_at, claimed_at)
        valid_until = lease_deadline(sent_at, self.lease_s)
        for record in records:
            self._start(jobs, ClaimedJob.from_record(record), valid_until)
        if keyed:
            return len(records), first["held"]
        budget = first["budget"]
        return len(records), len(records) == budget and budget < n

    def _fresh_hint(self, queue: str) -> ClaimHint | None:
        """The queue's hint, unless a poll interval has passed since its full claim (then none)."""
        hint = self._hints.pop(queue, None)
        if hint is not None and time.monotonic() - hint.since < self.poll_interval_s:
            return hint
        return None

    async def _claim(
        self, conn: AnyConnection, jobs: asyncio.TaskGroup, queue: str, n: int, hint: ClaimHint | None
    ) -> int:
        """Claim up to ``n`` jobs of ``queue`` and start them: after ``hint``, or from the head of
        the queue without one. A claim that got all it asked for leaves the hint where it ended."""
        wakes = self._wakes[queue]
        self._claim_unsure = True
        sent_at = time.monotonic()  # before sending: the lease is written later than this
        claim = JobClaim(
            queue=queue,
            limit=n,
            owner=self.owner,
            lease_s=self.lease_s,
            now=None,
            tasks=self.tasks,
            # Never a job this process still runs (a stopped run not yet returned).
            excluded=self.running.ids(),
            shard=self.shards[queue],
        )
        if hint is None:
            records = await claim_jobs(conn, claim)
        else:
            after = JobClaimAfter(**claim._asdict(), priority=hint.priority, run_at=hint.run_at, id=hint.id)
            records = await claim_jobs_after(conn, after)
        self._claim_unsure = False
        if len(records) == n and self._wakes[queue] == wakes:
            self._hints[queue] = ClaimHint.after(records, hint.since if hint is not None else sent_at)
        if records:  # the latest claim time: one claim's rows share it
            claimed_at = records[0]["started_at"]
            self._claimed_at = claimed_at if self._claimed_at is None else max(self._claimed_at, claimed_at)
        valid_until = lease_deadline(sent_at, self.lease_s)
        for record in records:
            self._start(jobs, ClaimedJob.from_record(record), valid_until)
        return len(records)

    def _start(self, jobs: asyncio.TaskGroup, job: ClaimedJob, valid_until: float) -> None:
        if time.monotonic() >= valid_until:  # the claim's reply took most of a lease: not ours to run
            log.warning("job_claim_too_late", job_id=job.id, attempt=job.attempt)
            self.executor.hand_back(job)  # at once, its attempt unused (not left to its lease)
            return
        running = self.running.add(job, valid_until)
        if running is None:  # claims skip the jobs this process runs: a bug if it happens
            log.error("job_claimed_twice", job_id=job.id, attempt=job.attempt)
            return
        # A fenced run's cleanup ends well within the lease's margin.
        running.cleanup_s = self.cleanup_s
        run = fenced(self.executor.run(running), running)
        running.task = jobs.create_task(run, name=f"skiplock:job:{job.id}")
        running.task.add_done_callback(self._job_done)

    async def _release_unrun(self, conn: AnyConnection) -> None:
        """Hand back the jobs of a claim whose reply was lost (they never started here)."""
        # Never a job whose outcome waits to be written (its run began: it is no lost claim).
        ours = [*self.running.ids(), *self.executor.completer.pending_leases()]
        rows = await conn.fetch(JOBS.job_release_unrun, self.owner, self._claimed_at, ours)
        self._claim_unsure = False
        if rows:
            await notify_requeued(conn, rows)  # a cancelled one needs no wake-up
            log.warning("lost_claims_released", job_ids=[r["id"] for r in rows])

    def _job_done(self, _task: asyncio.Task[None]) -> None:
        if self._hungry:
            self._woken.update(self._hungry)
            self._wakeup.set()

    async def _drain(self) -> None:
        """Let running jobs finish until the grace period (counted from :meth:`stop`) is over, then
        stop the rest: they are handed back. A thread still running is not waited for past the
        grace: the process exits without joining it (see cli.py), so its job is handed back now."""
        deadline = (self._stopped_at or time.monotonic()) + self.shutdown_grace_s
        if len(self.running):
            log.info("waiting_for_running_jobs", count=len(self.running), grace_s=self.shutdown_grace_s)
        while len(self.running) and time.monotonic() < deadline:
            self.running.freed.clear()
            try:
                await asyncio.wait_for(self.running.freed.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        for running in self.running:
            self.running.stop(running.job.id, StopReason.SHUTDOWN)
        self.executor.abandon_threads()

    async def stop(self) -> None:
        for queue in list(self._rate_timers):
            self._cancel_rate_timer(queue)
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self._stop.set()
        self._wakeup.set()


def _fields(limits: QueueLimits) -> dict[str, Any]:
    return {
        "concurrency": limits.concurrency,
        "global_concurrency": limits.global_concurrency,
        "rate_limit": None if limits.rate is None else str(limits.rate),
        "key_concurrency": limits.key_concurrency,
        "key_rate_limit": None if limits.key_rate is None else str(limits.key_rate),
    }
