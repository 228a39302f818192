"""Everything a skiplock process runs beside HTTP: pool, listener, workers and housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from datetime import datetime
from types import TracebackType
from typing import Self

import asyncpg
import structlog

from skiplock import metrics
from skiplock.db.migrate import migrate_database
from skiplock.db.migrate import missing as missing_migrations
from skiplock.db.pool import create_pool, engine_limits, task_limits, warn_of_unset_limits
from skiplock.db.replica import ReadRoute
from skiplock.errors import ConfigError, InvalidArgumentsError, MigrationError
from skiplock.fetcher import Fetcher, FetchPolicy
from skiplock.queue._completer import Completer
from skiplock.queue._event_writer import EventWriter
from skiplock.queue._executor import Executor
from skiplock.queue._hub import EventHub
from skiplock.queue._lease import LeaseKeeper
from skiplock.queue._listener import Listener
from skiplock.queue._presence import WorkerPresence, WorkerRequest
from skiplock.queue._processes import TaskProcesses
from skiplock.queue._producer import Producer
from skiplock.queue._pruner import Pruner
from skiplock.queue._registrations import TaskRegistrar
from skiplock.queue._rescuer import Rescuer
from skiplock.queue._rollup import Rollup
from skiplock.queue._running import RunningJobs
from skiplock.queue._scheduler import Scheduler
from skiplock.queue._threads import TaskThreads, busy_threads
from skiplock.queue._waker import Waker
from skiplock.queue._write_order import EventsBeforeOutcomes
from skiplock.queue.client import Client
from skiplock.queue.handles import default_client_or_none, set_default_client
from skiplock.queue.limits import declare_key_limits, declare_queue_limits, task_key_limits
from skiplock.queue.results import ResultWaiter
from skiplock.queue.tasks import DEFAULT_QUEUE, TaskRegistry
from skiplock.queue.workers import Role
from skiplock.service import Service, Supervisor
from skiplock.settings import EVERY_QUEUE, Settings, parse_queue_declaration, parse_queue_spec

log = structlog.get_logger("skiplock.engine")


def busy_task_threads() -> int:
    """Threads of this process still running a ``def`` task, engines closed or not: a thread cannot
    be interrupted, so a process that waited for them on exit would outlive its shutdown grace."""
    return busy_threads()


def worker_id() -> str:
    """Unique per process: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def declared_queues(settings: Settings, registry: TaskRegistry) -> dict[str, int | None]:
    """Queue → the per-process limit SKIPLOCK_QUEUES gives it (None: the process's concurrency).
    Unset: 'default' and every task's queue; ``*`` adds those to whatever else it names (and the
    producer claims from any other queue it finds jobs in)."""
    declared: dict[str, int | None] = {}
    for spec in settings.queues or sorted({DEFAULT_QUEUE, *registry.queues()}):
        name, limit = parse_queue_spec(spec)
        declared[name] = limit
    if EVERY_QUEUE in declared:
        for name in sorted({DEFAULT_QUEUE, *registry.queues()}):
            declared.setdefault(name, declared[EVERY_QUEUE])
    return declared


def served_queues(settings: Settings, registry: TaskRegistry) -> dict[str, int]:
    """Queue → this process's concurrency limit for it (``*`` aside: see :func:`declared_queues`)."""
    c = settings.concurrency
    return {
        name: min(limit or c, c)
        for name, limit in declared_queues(settings, registry).items()
        if name != EVERY_QUEUE
    }


class Engine:
    """Start with ``async with Engine(settings, registry, dsn) as engine:``; ``engine.client`` enqueues."""

    def __init__(
        self, settings: Settings, registry: TaskRegistry, dsn: str, *, role: Role | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.dsn = dsn
        #: LISTEN and migrations need a session of their own: never through a transaction pooler.
        self.direct_dsn = settings.direct_database_url(dsn)
        #: This boot's id in the fleet (GET /workers), and the lease owner of the jobs it runs.
        self.owner = worker_id()
        #: serve (HTTP and jobs), worker (jobs only: ``skiplock worker``) or api (HTTP only).
        self.role: Role = role or ("serve" if settings.worker else "api")
        self.queues = served_queues(settings, registry)
        self.declared_queues = declared_queues(settings, registry)
        #: Set when an operator asked this process to stop (POST /workers/{id}/stop): the CLI then
        #: shuts it down as on SIGTERM; an application embedding the engine may wait on it too.
        self.stop_requested = asyncio.Event()
        self._producer: Producer | None = None
        self._presence: WorkerPresence | None = None
        self._pool: asyncpg.Pool | None = None
        self._task_pool: asyncpg.Pool | None = None
        self._read_pool: asyncpg.Pool | None = None  # SKIPLOCK_READ_DATABASE_URL's
        self._client: Client | None = None
        self.limits = engine_limits(settings)  # of the engine's own connections
        self.listener = Listener(self.direct_dsn, limits=self.limits)
        #: Outbound HTTP shared by every task (and the API's synchronous fetch).
        self.http = Fetcher(FetchPolicy.from_settings(settings))
        self.running = RunningJobs(owner=self.owner)
        #: Plain def tasks run here, never in the loop's default executor (DNS lookups use that).
        self.threads = TaskThreads(settings.concurrency)
        #: executor="process" tasks (and SKIPLOCK_PROCESS_QUEUES) run in children started on demand.
        self.processes = TaskProcesses(
            settings.process_pool_size or os.cpu_count() or 1,
            modules=settings.task_modules,
            max_tasks=settings.process_max_tasks_per_child,
            max_memory_mb=settings.process_max_memory_mb_per_child,
            warm=settings.process_warm_children if settings.worker else 0,
        )
        metrics.jobs_running.set_function(lambda: len(self.running))  # read at scrape, not per job
        metrics.task_processes.set_function(lambda: len(self.processes.pids()))
        self.supervisor: Supervisor | None = None
        #: Set when a background service died (ended or raised without being asked).
        self.failed = asyncio.Event()
        self.hub: EventHub
        #: Waits for jobs' results, in every role (an API-only process answers long polls too).
        self.results: ResultWaiter
        self._task: asyncio.Task[None] | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        """The engine's own pool: its connections are not reset between uses, so run nothing on it
        that leaves session state (SET without LOCAL, LISTEN, advisory locks); your own queries
        belong on :attr:`Client.task_pool` (a task's ``ctx.pool``)."""
        assert self._pool is not None, "the engine is not started"
        return self._pool

    @property
    def client(self) -> Client:
        assert self._client is not None, "the engine is not started"
        return self._client

    async def wait_failed(self) -> None:
        """Return when a background service has ended or raised without being asked to."""
        await self.failed.wait()

    @property
    def failures(self) -> dict[str, str]:
        """Service name → why it died; empty while every service runs."""
        return self.supervisor.failures if self.supervisor is not None else {}

    @property
    def healthy(self) -> bool:
        """False once a background service has died (or the engine stopped)."""
        return self._task is not None and not self._task.done() and not self.failures

    async def quiesce(self) -> None:
        """The first step of a shutdown, at once: no schedule fires and no job is claimed any
        more; running jobs go on until :meth:`stop` (at most the grace period from now). Waits
        for results end at once with where their jobs are, so no long poll holds the shutdown."""
        if self._presence is not None:
            self._presence.stopping()
        if self.supervisor is not None:
            await self.supervisor.stop_now("scheduler", "producer", "results")

    def _services(self) -> list[Service]:
        self._presence = WorkerPresence(
            self.pool,
            worker_id=self.owner,
            role=self.role,
            queues=self._served_now,
            concurrency=self.settings.concurrency if self.settings.worker else 0,
            heartbeat_s=self.settings.lease_s / 3,  # as the lease heartbeat
            apply=self._apply_request,
        )
        self.listener.subscribe("worker", self._presence.hint)
        self.listener.on_reconnect(lambda: self._presence.hint(self.owner) if self._presence else None)
        # Stopped late (services stop in reverse): its beat says 'stopping' while jobs drain.
        services: list[Service] = [self.listener, self._presence, self.hub, self.results]
        if self.client.waker is not None:
            services.append(self.client.waker)
        self.listener.subscribe("ev", self.hub.hint)
        self.listener.on_reconnect(self.hub.catch_up)
        self.listener.subscribe("ev", self.results.hint)
        self.listener.subscribe("wf", self.results.workflow_hint)
        self.listener.on_reconnect(self.results.read_all)
        services.append(
            Rescuer(
                self.pool,
                interval_s=self.settings.rescue_interval_s,
                lease_s=self.settings.lease_s,
                registry=self.registry,
            )
        )
        services.append(
            Pruner(
                self.pool,
                retention_s=self.settings.retention_s,
                interval_s=self.settings.prune_interval_s,
                worker_retention_s=self.settings.worker_retention_s,
                stats_retention_s=self.settings.stats_retention_s,
            )
        )
        services.append(Rollup(self.pool, interval_s=self.settings.stats_interval_s))
        if self.settings.scheduler:
            scheduler = Scheduler(self.pool, self.registry)
            self.listener.subscribe("schedules", scheduler.wake)
            self.listener.on_reconnect(scheduler.wake)
            services.append(scheduler)
        if self.settings.worker:
            order = EventsBeforeOutcomes()  # the completer's and the event writer's turns
            completer = Completer(self.pool, self.owner, order=order)
            # Its own connection, direct when a listen URL is set: nothing the pool serves can
            # starve it, nor, behind a transaction pooler, the tasks' hold on the pooler's servers.
            keeper = LeaseKeeper(
                self.direct_dsn,
                owner=self.owner,
                running=self.running,
                lease_s=self.settings.lease_s,
                limits=self.limits,
                outcomes=completer.pending_leases,  # finished runs stay ours until written
                outcome_shards=completer.pending_shards,
            )
            writer = EventWriter(
                self.pool,
                owner=self.owner,
                running=self.running,
                interval_s=self.settings.progress_interval_s,
                order=order,
            )
            producer = Producer(
                self.dsn,
                owner=self.owner,
                queues=self.queues,
                concurrency=self.settings.concurrency,
                lease_s=self.settings.lease_s,
                poll_interval_s=self.settings.poll_interval_s,
                shutdown_grace_s=self.settings.shutdown_grace_s,
                executor=Executor(
                    self.registry,
                    self.client,
                    self.running,
                    completer,
                    self.http,
                    self.threads,
                    self.processes,
                    frozenset(self.settings.process_queues),
                ),
                running=self.running,
                limits=self.limits,
                transaction_pooler=self.settings.transaction_pooler,
                declared=self.declared_queues,
            )
            self._producer = producer
            producer.on_queue_found.append(self._presence.refresh)
            self.listener.subscribe("queued", producer.wake)
            self.listener.subscribe("limits", producer.limits_changed)
            self.listener.subscribe("cancel", keeper.cancel)
            self.listener.on_reconnect(producer.wake_all)
            # Stopped in reverse: producer first (drain), completer last (flush).
            registrar = TaskRegistrar(self.pool, owner=self.owner, tasks=[t.name for t in self.registry])
            services += [completer, writer, keeper, registrar, producer]
        return services

    def _served_now(self) -> dict[str, int]:
        """Queue → this process's limit for it now (a '*' worker's found queues included)."""
        producer = self._producer
        if producer is None:
            return {}
        served = dict(producer.configured)
        if producer.every_queue:
            served[EVERY_QUEUE] = producer.every_queue_limit()
        return served

    async def _apply_request(self, request: WorkerRequest) -> str:
        """What operators asked of this process (its workers row): the state it is in after it."""
        if request.stop and not self.stop_requested.is_set():
            log.info("worker_stop_requested", owner=self.owner)
            self.stop_requested.set()
        producer = self._producer
        if producer is not None:
            producer.set_quiet(request.quiet or request.stop)
            if request.concurrency >= 1 and request.concurrency != producer.concurrency:
                producer.set_concurrency(request.concurrency)
        if request.stop:
            return "stopping"
        if not request.quiet or producer is None:
            return "online"
        with contextlib.suppress(TimeoutError):  # a claim's reply is bounded by its statement limit
            await asyncio.wait_for(producer.claims_ended(), self.settings.lease_s)
        return "quiet"

    @staticmethod
    async def _require_schema(pool: asyncpg.Pool) -> None:
        """This release's statements need its migrations: without them every claim would fail."""
        async with pool.acquire() as conn:
            lacking = await missing_migrations(conn)
        if lacking:
            await pool.close()
            raise MigrationError(
                f"the database lacks migration(s) {', '.join(f'{v:04d}' for v in lacking)} of this release;"
                " run `skiplock migrate` first (SKIPLOCK_AUTO_MIGRATE is off)"
            )

    async def _reads(self) -> ReadRoute:
        """Where the reads that may lag go: the read replica's pool (connected on first use, so a
        replica away at start is only a fallback) beside the primary's."""
        s, pool = self.settings, self.pool
        if not s.read_database_url:
            return ReadRoute(pool)
        self._read_pool = replica = await create_pool(
            s.read_database_url,
            min_size=0,
            max_size=max(2, s.pool_max_size // 2),
            limits=self.limits,
            application_name="skiplock-reads",
            reset_sessions=False,
        )
        metrics.pool_waits.track("reads", replica)
        return ReadRoute(pool, replica, max_lag_s=s.read_max_lag_s)

    async def start(self) -> None:
        s = self.settings
        if s.auto_migrate:
            await migrate_database(self.direct_dsn)
        # Only the engine's and the API's own statements run on it (tasks have theirs, below).
        self._pool = pool = await create_pool(
            self.dsn,
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            limits=self.limits,
            reset_sessions=False,
            transaction_pooler=s.transaction_pooler,
        )
        metrics.pool_waits.track("engine", pool)
        if s.transaction_pooler:
            await warn_of_unset_limits(self._pool, self.limits)
        if not s.auto_migrate:
            await self._require_schema(self._pool)
        # Tasks get a pool of their own: their long statements and COPYs are not cut by the
        # engine's limits, and a task holding connections cannot starve the engine's writes.
        self._task_pool = task_pool = await create_pool(
            self.dsn,
            min_size=0,
            max_size=s.task_pool_max_size,
            limits=task_limits(s),
            application_name="skiplock-tasks",
            transaction_pooler=s.transaction_pooler,
        )
        metrics.pool_waits.track("tasks", task_pool)
        await self.http.start()
        self._client = Client(self._pool, self.registry, task_pool=self._task_pool, reads=await self._reads())
        self._client.waker = Waker(self._pool)
        try:
            await self._declare_schedules()
            if s.worker:
                await declare_queue_limits(self._pool, map(parse_queue_declaration, s.queues))
                await declare_key_limits(self._pool, task_key_limits(self.registry))
        except BaseException:  # a bad declared schedule: nothing of the engine stays open
            await self.stop()
            raise
        self.hub = EventHub(self._pool, buffer=s.subscriber_buffer)
        self.results = self._client.results = ResultWaiter(self._pool)
        self.supervisor = Supervisor(self._services(), self.failed)
        ready = asyncio.Event()
        self._task = asyncio.create_task(self.supervisor.run(ready), name="skiplock:supervisor")
        waiter = asyncio.ensure_future(ready.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        await asyncio.wait({waiter, failed, self._task}, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        if not ready.is_set() or self.failures:
            waiter.cancel()
            await self.stop()
            raise RuntimeError("skiplock services failed to start")
        self.processes.start()  # the warm children, if any, in the background
        set_default_client(self._client)  # what task.enqueue(...) uses when given no client
        log.info("engine_started", owner=self.owner, worker=s.worker, queues=self.queues)

    async def _declare_schedules(self) -> None:
        """Schedules written in code (@task(schedule=…)): created or updated; API-made ones win."""
        for task in self.registry:
            for spec in task.declared_schedules():
                try:
                    declared = await self.client.schedules.declare(spec)
                except InvalidArgumentsError as exc:  # a Task built by hand, not through @task
                    raise ConfigError(f"schedule {spec.name!r} of task {task.name!r}: {exc.message}") from exc
                if declared is None:
                    log.warning(
                        "declared_schedule_ignored", name=spec.name, reason="an API schedule has the name"
                    )

    async def fire_schedules(self, now: datetime) -> int:
        """Fire the schedules due at ``now`` as if the clock read it (a test's time control: the
        database's clock cannot be moved); returns how many schedules were handled."""
        return await Scheduler(self.pool, self.registry).fire_due(now)

    async def stop(self) -> None:
        """Shut down in order: schedules and claiming at once, running jobs within the grace
        period (the rest handed back), outcomes flushed, then connections closed."""
        await self.quiesce()
        if self._client is not None and default_client_or_none() is self._client:
            set_default_client(None)
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self._task is not None:
            with contextlib.suppress(Exception):  # already logged by the supervisor
                await self._task
            self._task = None
        self.threads.close()
        await self.processes.close()
        await self.http.close()
        if self._read_pool is not None:
            await self._read_pool.close()
            self._read_pool = None
        if self._task_pool is not None:
            await self._task_pool.close()
            self._task_pool = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        log.info("engine_stopped", owner=self.owner)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
