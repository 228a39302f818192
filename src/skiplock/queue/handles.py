"""A job enqueued from Python, as a handle one can wait on, and the client a task's ``enqueue``
uses when it is given none (the process's engine, or the last ``Client.connect``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skiplock.errors import ConfigError

if TYPE_CHECKING:
    from skiplock.queue.client import Client
    from skiplock.queue.models import Job

_default: Client | None = None


def set_default_client(client: Client | None) -> Client | None:
    """The client ``task.enqueue(...)`` uses when given none; returns the one it replaces."""
    global _default
    previous, _default = _default, client
    return previous


def default_client_or_none() -> Client | None:
    return _default


def default_client() -> Client:
    if _default is None:
        raise ConfigError(
            "no skiplock client: inside a skiplock process the engine provides one; elsewhere "
            "`client = await Client.connect(dsn)` first, or pass client=…"
        )
    return _default


@dataclass(frozen=True, slots=True)
class JobHandle:
    """A job just enqueued: ``job`` as it was written, and ``await handle.result(timeout=…)``."""

    job: Job
    client: Client

    @property
    def id(self) -> int:
        return self.job.id

    async def result(self, timeout: float | None = 30) -> Any:  # noqa: ASYNC109 - Celery's get(timeout=)
        """The job's result once it has succeeded; its failure raised as :class:`JobFailed`
        (cancelled: :class:`JobCancelled`), :class:`ResultTimeout` (a TimeoutError) after
        ``timeout`` seconds (None: no limit). Waits on LISTEN, not by polling."""
        return await self.client.wait_for_result(self.job.id, timeout_s=timeout)

    async def refresh(self) -> Job:
        """The job as it is now."""
        return await self.client.get(self.job.id)
