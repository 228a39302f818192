"""The engine's own threads for plain ``def`` tasks.

Never the loop's default executor: asyncpg and aiohttp resolve host names there, so sync tasks
sleeping in it would stall every lookup (a reconnect after a failover included). Sized to the
process's concurrency, so every running job may be a thread without waiting for one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

THREAD_PREFIX = "skiplock-task"

_busy = 0
_busy_lock = threading.Lock()


def busy_threads() -> int:
    """Task threads of this process still running a task (a thread cannot be interrupted)."""
    return _busy


class ThreadExit(Exception):
    """A SystemExit, KeyboardInterrupt or GeneratorExit a task raised in its thread, carried to
    the loop as an ordinary exception: asyncio and coroutine wrappers give those a meaning of
    their own when a future holds them (a GeneratorExit thrown into a coroutine reads as close())."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error = error


def _counted(fn: Callable[[], T]) -> T:
    global _busy
    with _busy_lock:
        _busy += 1
    try:
        return fn()
    except Exception:
        raise
    except BaseException as exc:
        raise ThreadExit(exc) from None
    finally:
        with _busy_lock:
            _busy -= 1


class TaskThreads:
    """A thread pool of ``size`` threads named ``skiplock-task_N``."""

    def __init__(self, size: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=THREAD_PREFIX)

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on one of these threads; the future resolves on the running loop."""
        return asyncio.get_running_loop().run_in_executor(self._pool, _counted, fn)

    def close(self) -> None:
        """Take no more work and let idle threads go. A thread still running a task goes on:
        the CLI exits without joining it, once its job was handed back."""
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["THREAD_PREFIX", "TaskThreads", "ThreadExit", "busy_threads"]
