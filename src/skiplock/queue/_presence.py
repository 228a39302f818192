"""This process's row in the fleet (``workers``, see workers.py): registered at start, beaten while
it runs, marked stopped at the end; and the operators' requests found in it applied here.

One short statement every heartbeat (a third of the lease, as the lease heartbeat), whatever the
number of jobs: nothing per job. A request arrives as ``worker:<id>`` and is read from the row at
once; the beat reads the row too, so a lost notification delays a request by a beat at most. A
process whose beats fail (the database away) shows offline after three heartbeats; its beat
back brings it online again, and a row pruned meanwhile is written again.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from skiplock._version import __version__
from skiplock.queue._statements import WORKERS
from skiplock.service import Recovery, StopSignal, str_of

log = structlog.get_logger("skiplock.presence")


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    """What operators asked of this process, as its row holds it."""

    quiet: bool
    stop: bool
    concurrency: int


#: Applies a request; returns the state the process is in after it (online, quiet, stopping),
#: once it is in it (quiet: no claim under way any more).
Apply = Callable[[WorkerRequest], Awaitable[str]]


class WorkerPresence:
    name = "presence"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        worker_id: str,
        role: str,
        queues: Callable[[], dict[str, int]],
        concurrency: int,
        heartbeat_s: float,
        apply: Apply,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.role = role
        self.queues = queues
        self.concurrency = concurrency
        self.heartbeat_s = heartbeat_s
        self.apply = apply
        self.state = "online"
        self._sent_queues: dict[str, int] | None = None
        self._wake = asyncio.Event()
        self._stop = StopSignal()

    def hint(self, payload: str) -> None:
        """Listener hook for ``worker:<id>``: a request to this process, maybe."""
        if payload == self.worker_id:
            self._wake.set()

    def refresh(self) -> None:
        """Beat now (what it serves changed)."""
        self._wake.set()

    def stopping(self) -> None:
        """The process shuts down: its next beat says so (and is sent at once)."""
        self.state = "stopping"
        self._wake.set()

    async def run(self, ready: asyncio.Event) -> None:
        recovery = Recovery(self.name, self._stop, first_s=0.1, max_s=self.heartbeat_s)
        registered = False
        while not self._stop.is_set:
            try:
                if not registered:
                    await self._register()
                    registered = True
                self._wake.clear()
                registered = await self._beat()
            except Exception as exc:  # the beat must outlive anything; Recovery logs and counts it
                ready.set()  # never hold the start back: nothing else depends on the row
                if await recovery.failed(exc):
                    break
                continue
            recovery.succeeded()
            ready.set()
            if not registered:
                continue  # the row was pruned (a long outage): written again at once
            await self._sleep()
        await self._stopped()

    async def _sleep(self) -> None:
        waiter = asyncio.ensure_future(self._wake.wait())
        stopped = asyncio.ensure_future(self._stop.sleep(self.heartbeat_s))
        try:
            await asyncio.wait({waiter, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopped.cancel()

    async def _register(self) -> None:
        self._sent_queues = self.queues()
        await self.pool.execute(
            WORKERS.worker_register,
            self.worker_id,
            socket.gethostname(),
            os.getpid(),
            __version__,
            self.role,
            self._sent_queues,
            self.concurrency,
            self.heartbeat_s,
            self.state,
        )

    async def _beat(self) -> bool:
        """Beat, and apply what the row asks; False when the row is gone."""
        row = await self._send_beat()
        if row is None:
            return False
        state = await self.apply(WorkerRequest(row["quiet"], row["stop_requested"], row["concurrency"]))
        if self.state != "stopping" and state != self.state:
            self.state = state
            log.info("worker_state_changed", worker_id=self.worker_id, state=state)
            await self._send_beat()  # the new state shows at once, not a beat later
        return True

    async def _send_beat(self) -> Any:
        queues = self.queues()
        changed = queues != self._sent_queues
        row = await self.pool.fetchrow(
            WORKERS.worker_beat, self.worker_id, self.state, queues if changed else None
        )
        if changed and row is not None:
            self._sent_queues = queues
        return row

    async def _stopped(self) -> None:
        try:  # bounded whole (a pool acquire included): a database away must not hold the shutdown
            await asyncio.wait_for(self.pool.execute(WORKERS.worker_stopped, self.worker_id), 2)
        except Exception as exc:  # best effort: the row goes offline on its own, three beats later
            log.warning("worker_stopped_not_written", error=str_of(exc))

    async def stop(self) -> None:
        self._stop.set()
