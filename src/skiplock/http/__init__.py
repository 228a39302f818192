"""skiplock over HTTP, for services that do not share its database (the ``http`` extra: httpx)."""

from __future__ import annotations

from skiplock.http._client import Client, error_of

__all__ = ["Client", "error_of"]
