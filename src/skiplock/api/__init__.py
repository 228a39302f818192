"""The HTTP API (Litestar). It calls the engine through ``Client``; the engine never imports it."""

from __future__ import annotations

from skiplock.api.app import create_app
from skiplock.api.plugin import SkiplockPlugin

__all__ = ["SkiplockPlugin", "create_app"]
