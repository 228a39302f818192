"""SIGINT/SIGTERM for ``skiplock serve`` and ``skiplock worker``: a bounded, honest shutdown.

The first signal starts the orderly shutdown (the scheduler and claiming stop at once, running
jobs get the grace period, the rest are handed back). A second signal exits at once. Whatever
hangs meanwhile (a task that swallows its cancellation, a database that does not answer), a
watchdog thread exits the process ``grace_s + 4`` seconds after the first signal.

Exiting uses ``os._exit`` where the interpreter's own exit would wait: thread-pool threads are
joined at interpreter exit, and a plain ``def`` task's thread cannot be interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import structlog

log = structlog.get_logger("skiplock.shutdown")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: After the grace period: time for the hand-back, the last writes and closing connections.
DEADLINE_MARGIN_S = 4.0


def exit_now(code: int) -> None:
    """Leave the process at once, logs flushed, without joining any thread."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class ShutdownSignals:
    """``with signals.installed():`` then ``await signals.requested.wait()``."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        #: Set (on the loop) at the first signal.
        self.requested = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._first: int | None = None
        self._watchdog: threading.Timer | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM in this block (the main thread only), then restore."""
        previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # A signal handler may interrupt a log write: the loop logs, not this handler.
        if self._first is not None:
            os.write(2, f"skiplock: second {signal.Signals(signum).name}: exiting now\n".encode())
            exit_now(128 + signum)
        self._first = signum
        self._watchdog = threading.Timer(self.grace_s + DEADLINE_MARGIN_S, self._deadline)
        self._watchdog.daemon = True
        self._watchdog.start()
        self._loop.call_soon_threadsafe(self._requested, signum)

    def request(self, reason: str) -> None:
        """A shutdown asked for by other means than a signal (an operator's stop, through the
        database): the same as a first signal, watchdog included. Call it on the loop."""
        if self._first is not None:
            return
        self._first = signal.SIGTERM
        self._watchdog = threading.Timer(self.grace_s + DEADLINE_MARGIN_S, self._deadline)
        self._watchdog.daemon = True
        self._watchdog.start()
        log.info("shutdown_requested", reason=reason, grace_s=self.grace_s)
        self.requested.set()

    def _requested(self, signum: int) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name, grace_s=self.grace_s)
        self.requested.set()

    def _deadline(self) -> None:
        log.error("shutdown_deadline_exceeded", waited_s=self.grace_s + DEADLINE_MARGIN_S)
        exit_now(1)
