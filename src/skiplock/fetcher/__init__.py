"""Outbound HTTP for tasks: one shared session, size and redirect limits, and an address policy."""

from __future__ import annotations

from skiplock.fetcher.guard import FetchPolicy, GuardedResolver, why_blocked
from skiplock.fetcher.session import Fetched, Fetcher

__all__ = ["FetchPolicy", "Fetched", "Fetcher", "GuardedResolver", "why_blocked"]
