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


class Supervisor:
    """Runs services in one TaskGroup: started in order, stopped in reverse."""

    def __init__(self, services: list[Service]) -> None:
        self.services = services
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    async def run(self, ready: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for service in self.services:
                    started = asyncio.Event()
                    self._tasks[service.name] = group.create_task(
                        service.run(started), name=f"skiplock:{service.name}"
                    )
                    waiter = asyncio.ensure_future(started.wait())
                    done, _ = await asyncio.wait(
                        {waiter, self._tasks[service.name]}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if waiter not in done:
                        waiter.cancel()
                        break  # the service ended before it was ready; the group reports why
                else:
                    log.info("services_started", services=[s.name for s in self.services])
                    ready.set()
        except BaseException:
            log.exception("service_failed")
            raise

    async def stop(self) -> None:
        """Stop every service, last started first, each finishing before the next stops."""
        if self._stopping:
            return
        self._stopping = True
        for service in reversed(self.services):
            await service.stop()
            task = self._tasks.get(service.name)
            if task is not None and not task.done():
                await asyncio.wait({task})
        log.info("services_stopped")
