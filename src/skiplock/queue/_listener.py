"""The one LISTEN connection of a process: reconnects by itself, pings when idle, fans out.

Notifications are hints; the callback only parses and hands on (no I/O). After a reconnect
every handler is told to look again, since notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from skiplock import metrics
from skiplock.db.pool import DB_UNAVAILABLE_OR_TIMEOUT, Limits, close_quietly, connect
from skiplock.queue._statements import CHANNEL
from skiplock.service import Recovery, StopSignal, str_of

log = structlog.get_logger("skiplock.listener")

Handler = Callable[[str], None]


class ListenerSignals:
    """Test hooks; nothing waits on them in production."""

    def __init__(self) -> None:
        self.reconnects = 0


class Listener:
    name = "listener"

    def __init__(
        self,
        dsn: str,
        *,
        ping_interval_s: float = 2.0,
        max_backoff_s: float = 5.0,
        limits: Limits | None = None,
    ) -> None:
        self.dsn = dsn
        self.limits = limits
        self.ping_interval_s = ping_interval_s
        self.max_backoff_s = max_backoff_s
        self.signals = ListenerSignals()
        self._handlers: dict[str, list[Handler]] = {}
        self._on_reconnect: list[Callable[[], None]] = []
        self._stop = StopSignal()
        self._lost = asyncio.Event()
        self.connection_pid: int | None = None

    def subscribe(self, kind: str, handler: Handler) -> None:
        """Call ``handler(rest)`` for each payload ``'<kind>:<rest>'``."""
        self._handlers.setdefault(kind, []).append(handler)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._on_reconnect.append(callback)

    def _dispatch(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        kind, _, rest = str(payload).partition(":")
        for handler in self._handlers.get(kind, ()):
            try:
                handler(rest)
            except Exception as exc:  # a hint lost; the poll covers it, the other handlers still run
                metrics.loop_errors.labels(self.name).inc()
                log.error("listener_handler_failed", kind=kind, error=str_of(exc), exc_info=exc)

    def _connection_lost(self, _conn: Any) -> None:
        self._lost.set()

    async def run(self, ready: asyncio.Event) -> None:
        # Any error (the database away, a reconnect callback that raised) is survived the same
        # way: logged, counted when unexpected, a backoff, a new connection.
        recovery = Recovery(self.name, self._stop, first_s=0.1, max_s=self.max_backoff_s)
        while not self._stop.is_set:
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect(self.dsn, limits=self.limits, application_name="skiplock-listener")
                await self._serve(conn, ready, first=not ready.is_set())
                recovery.succeeded()
            except Exception as exc:
                if await recovery.failed(exc):
                    break
            finally:
                self.connection_pid = None
                if conn is not None:
                    await close_quietly(conn)

    async def _serve(self, conn: asyncpg.Connection, ready: asyncio.Event, first: bool) -> None:
        self._lost.clear()
        conn.add_termination_listener(self._connection_lost)
        await conn.add_listener(CHANNEL, self._dispatch)
        self.connection_pid = conn.get_server_pid()
        if first:
            ready.set()
        else:
            self.signals.reconnects += 1
            metrics.listener_reconnects.inc()
            log.info("listener_reconnected", reconnects=self.signals.reconnects)
            self._tell_reconnected()
        while not self._stop.is_set:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self.ping_interval_s)
            if self._stop.is_set:
                return
            try:
                if self._lost.is_set():
                    raise ConnectionError("connection closed")
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=self.ping_interval_s)
            except DB_UNAVAILABLE_OR_TIMEOUT as exc:
                log.warning("listener_connection_lost", error=str_of(exc))
                return

    def _tell_reconnected(self) -> None:
        """Every handler looks again (what was sent meanwhile is lost); one that raises does not
        keep the others from being told."""
        for callback in self._on_reconnect:
            try:
                callback()
            except Exception as exc:
                metrics.loop_errors.labels(self.name).inc()
                log.error("listener_reconnect_callback_failed", error=str_of(exc), exc_info=exc)

    async def stop(self) -> None:
        self._stop.set()
        self._lost.set()
