"""The HTTP API (Litestar). It calls the engine through ``Client``; the engine never imports it.

What an application built on it uses: its routes, the plugin that runs the engine in the app's
lifespan and provides the ``client`` and ``engine`` dependencies, and the auth pieces a page of
its own needs (the dashboard's). ``skiplock.app`` assembles the application from these.
"""

from __future__ import annotations

from skiplock.api.metrics import database_stats
from skiplock.api.plugin import ClientDep, EngineDep, SkiplockPlugin
from skiplock.api.routes import api_routes
from skiplock.api.security import KEY_COOKIE, PUBLIC_ROUTE, AuthState, needs

# Sorted as str sorts (tests/unit/test_exports.py), not as ruff would (constants first).
__all__ = [  # noqa: RUF022
    "AuthState",
    "ClientDep",
    "EngineDep",
    "KEY_COOKIE",
    "PUBLIC_ROUTE",
    "SkiplockPlugin",
    "api_routes",
    "database_stats",
    "needs",
]
