"""Built-in tasks; importing this package registers them."""

from __future__ import annotations

from skiplock.tasks.sleep import SleepArgs, sleep

__all__ = ["SleepArgs", "sleep"]
