"""The LISTEN connection survives whatever its handlers and reconnect callbacks raise, and any
error of its own: it logs, counts (skiplock_loop_errors_total{service="listener"}), backs off and
reconnects; a handler that raises does not keep the others of its kind from their hint."""

from __future__ import annotations

import asyncio

import asyncpg

from skiplock import metrics
from skiplock.queue._listener import Listener
from tests.support.waiting import wait_until


def listener_errors() -> float:
    errors: float = metrics.loop_errors.labels("listener")._value.get()
    return errors


async def test_raising_handlers_and_callbacks_neither_stop_the_listener_nor_the_other_handlers(
    dsn: str, db: asyncpg.Connection
) -> None:
    listener = Listener(dsn, ping_interval_s=0.2)
    hints: list[str] = []
    reconnected: list[bool] = []

    def broken(_rest: str) -> None:
        raise RuntimeError("a broken handler")

    def broken_callback() -> None:
        raise RuntimeError("a broken reconnect callback")

    listener.subscribe("queued", broken)
    listener.subscribe("queued", hints.append)
    listener.on_reconnect(broken_callback)
    listener.on_reconnect(lambda: reconnected.append(True))
    errors_before = listener_errors()
    ready = asyncio.Event()
    running = asyncio.create_task(listener.run(ready))
    try:
        await wait_until(ready.is_set, 10)
        await db.execute("SELECT pg_notify('skiplock', 'queued:media')")
        await wait_until(lambda: hints == ["media"], 5)
        for round_ in (1, 2):
            pid = listener.connection_pid
            await db.execute("SELECT pg_terminate_backend($1)", pid)
            await wait_until(lambda n=round_: len(reconnected) == n, 10)
        await db.execute("SELECT pg_notify('skiplock', 'queued:default')")
        await wait_until(lambda: hints == ["media", "default"], 5)
        assert not running.done()
        assert listener.signals.reconnects == 2
        assert listener_errors() - errors_before == 4  # two hints, two reconnects
    finally:
        await listener.stop()
        await asyncio.wait_for(running, 10)
