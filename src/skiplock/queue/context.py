"""What a running task sees: its job, progress reporting, the pool, and follow-up enqueueing."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

    from skiplock.queue.client import Client
    from skiplock.queue.models import Job


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int


class Context:
    """Handed to every task as its first argument."""

    def __init__(
        self,
        job: JobInfo,
        *,
        client: Client,
        on_progress: Callable[[int, dict[str, Any]], None],
    ) -> None:
        self.job = job
        self.client = client
        self._on_progress = on_progress

    @property
    def pool(self) -> asyncpg.Pool:
        return self.client.pool

    def report_progress(
        self,
        fraction: float | None = None,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Record progress without waiting (safe from a plain ``def`` task's thread)."""
        if fraction is None and current is not None and total:
            fraction = current / total
        if fraction is not None and not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError("progress fraction must be between 0 and 1")
        value: dict[str, Any] = {
            "fraction": fraction,
            "message": message,
            "at": datetime.now(UTC).isoformat(),
        }
        if current is not None:
            value["current"] = current
        if total is not None:
            value["total"] = total
        self._on_progress(self.job.id, value)

    async def progress(
        self,
        fraction: float | None = None,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report progress; the latest value is written to the job, throttled."""
        self.report_progress(fraction, message, current=current, total=total)

    async def enqueue(self, task: str, args: Any = None, **options: Any) -> Job:
        """Enqueue a follow-up job (see :meth:`Client.enqueue`)."""
        return await self.client.enqueue(task, args, **options)
