"""The lifecycle every background part shares, and the Supervisor that runs them together.

A service's ``run(ready)`` sets ``ready`` once it works and returns after ``stop()``; ``stop()``
is idempotent and safe before ``run``. The Supervisor starts services in order in one
TaskGroup, reports started when every ``ready`` is set, and stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Protocol

import structlog

from skiplock import metrics
from skiplock.db.pool import is_unavailable
from skiplock.errors import str_of as str_of  # re-exported: every service logs with it

log = structlog.get_logger("skiplock.service")


class Service(Protocol):
    name: str

    async def run(self, ready: asyncio.Event) -> None: ...

    async def stop(self) -> None: ...


class StopSignal:
    """The stop flag a service's loop sleeps on."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    async def every(self, interval_s: float, jitter: float = 0.1) -> AsyncIterator[None]:
        """Yield every ``interval_s`` (± ``jitter``, so replicas do not run in step) until stopped."""
        while not await self.sleep(interval_s * (1 - jitter + 2 * jitter * random.random())):
            yield

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stopped meanwhile."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(seconds, 0))
        except TimeoutError:
            return False
        return True


class Recovery:
    """How a background loop survives an error: log it, count the unexpected ones, back off.

    ``await recovery.failed(exc)`` after an error (True when the service was stopped meanwhile),
    ``recovery.succeeded()`` after a good round. The database being away is expected and only
    logged; anything else is also counted in ``skiplock_loop_errors_total{service}``. Never spins:
    the wait doubles from ``first_s`` to ``max_s``, with jitter so replicas do not retry in step.
    """

    def __init__(self, service: str, stop: StopSignal, *, first_s: float = 0.05, max_s: float = 5.0) -> None:
        self.service = service
        self.stop = stop
        self.first_s = first_s
        self.max_s = max_s
        self.wait_s = first_s
        self.failures = 0

    def succeeded(self) -> None:
        self.wait_s = self.first_s
        self.failures = 0

    async def failed(self, exc: BaseException, **fields: object) -> bool:
        self.failures += 1
        wait_s = self.wait_s * (0.75 + 0.5 * random.random())
        self.wait_s = min(self.wait_s * 2, self.max_s)
        error = str_of(exc)
        if is_unavailable(exc):
            log.warning(f"{self.service}_failed", error=error, retry_in_s=round(wait_s, 3), **fields)
        else:
            metrics.loop_errors.labels(self.service).inc()
            log.error(
                f"{self.service}_error",
                error=error,
                error_type=type(exc).__name__,
                retry_in_s=round(wait_s, 3),
                exc_info=exc,
                **fields,
            )
        return await self.stop.sleep(wait_s)


class Supervisor:
    """Runs services in one TaskGroup: started in order, stopped in reverse.

    A service that raises, or ends without being asked to, is a failure: it is logged, named in
    :attr:`failures` and :attr:`failed` is set, while the other services go on (the process
    decides to stop; :meth:`stop` then stops the rest in order, so running jobs are handed back).
    """

    def __init__(self, services: list[Service], failed: asyncio.Event | None = None) -> None:
        self.services = services
        #: Service name → why it ended without being asked.
        self.failures: dict[str, str] = {}
        #: Set at the first failure.
        self.failed = failed or asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._asked: set[str] = set()
        self._stopping = False

    async def run(self, ready: asyncio.Event) -> None:
        """Start every service and return when all have ended; ``ready`` is set once all are."""
        async with asyncio.TaskGroup() as group:
            for service in self.services:
                started = asyncio.Event()
                task = group.create_task(self._supervise(service, started), name=f"skiplock:{service.name}")
                self._tasks[service.name] = task
                waiter = asyncio.ensure_future(started.wait())
                done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:
                    waiter.cancel()
                    self._died(service.name, "ended before it was ready")
                    break  # the engine stops what did start
            else:
                log.info("services_started", services=[s.name for s in self.services])
                ready.set()

    async def _supervise(self, service: Service, started: asyncio.Event) -> None:
        try:
            await service.run(started)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if service.name not in self._asked:
                self._died(service.name, "cancelled without being asked")
            if task is not None and task.cancelling():
                raise  # torn down from outside: let it through
        except BaseException as exc:  # SystemExit too: it must not reach the event loop
            self._died(service.name, f"{type(exc).__name__}: {str_of(exc)}", exc)
        else:
            if service.name not in self._asked:
                self._died(service.name, "ended without being asked")

    def _died(self, name: str, reason: str, exc: BaseException | None = None) -> None:
        if name in self.failures:
            return
        self.failures[name] = reason
        self.failed.set()
        metrics.loop_errors.labels(name).inc()
        log.error("service_died", service=name, reason=reason, exc_info=exc)

    async def stop_now(self, *names: str) -> None:
        """Ask these services to stop without waiting for them (the scheduler and claiming stop
        at once on shutdown; the rest stop in order in :meth:`stop`)."""
        for service in self.services:
            if service.name in names:
                self._asked.add(service.name)
                await service.stop()

    async def stop(self) -> None:
        """Stop every service, last started first, each finishing before the next stops."""
        if self._stopping:
            return
        self._stopping = True
        self._asked.update(s.name for s in self.services)
        for service in reversed(self.services):
            try:
                await service.stop()
                task = self._tasks.get(service.name)
                if task is not None and not task.done():
                    await asyncio.wait({task})
            except Exception as exc:  # one service failing to stop must not keep the rest running
                log.error("service_stop_failed", service=service.name, error=str_of(exc), exc_info=exc)
        log.info("services_stopped")
