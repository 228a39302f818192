"""Testing your tasks with pytest: a real migrated PostgreSQL per test, a client on it, assertions
on what was enqueued and ``drain()``, which runs the real engine until nothing is left to run. The
fixtures come from the plugin (:mod:`skiplock.testing.plugin`, registered as ``skiplock``)."""

from __future__ import annotations

from skiplock.testing._kit import MAX_TICKS, Drained, Kit
from skiplock.testing._server import FAST_SETTINGS, embedded_server, session_server

__all__ = [  # noqa: RUF022 - sorted as the README lists it (tests/unit/test_exports.py)
    "Drained",
    "FAST_SETTINGS",
    "Kit",
    "MAX_TICKS",
    "embedded_server",
    "session_server",
]
