"""One process of the task process pool: ``python -m skiplock.queue._child [module …]``.

It imports the built-in tasks and the modules named, then runs one job at a time: a request is
one JSON line on stdin, and it answers on its stdout with JSON lines too: ``event`` lines (the
task's progress and log) and one final line (``result``, ``snooze`` or ``error``) with its
resident memory. Args and results cross as JSON; the task is found by its registered name (its
module imported on demand, when the request names it). What the task prints goes to stderr.

It ends when its stdin closes (the pool retires it), when it is killed (a time limit, a cancel,
a shutdown), and when its parent is gone (a parent-death signal on Linux, and a watch on its
parent's pid everywhere): a job is never run by an orphan while another process runs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NoReturn

from skiplock.db.storable import storable_json
from skiplock.errors import (
    InvalidArgumentsError,
    NotInTaskProcess,
    SkiplockError,
    Snooze,
    UnknownTaskError,
)
from skiplock.queue._executor import describe_error
from skiplock.queue.context import Context, JobInfo
from skiplock.queue.tasks import registered
from skiplock.queue.workflows import UpstreamFailure, typed_upstream

if TYPE_CHECKING:
    import asyncpg

    from skiplock.fetcher import Fetcher
    from skiplock.queue.models import Job

#: The environment variable that names the pool's process to its children.
PARENT_ENV = "SKIPLOCK_CHILD_PARENT"
_PARENT_WATCH_S = 0.5


class ChildContext(Context):
    """A process-pool task's context: its job, ``ctx.upstream``, progress and log (sent to the
    engine's process, which writes them as for any job). ``pool``, ``http`` and ``enqueue`` live
    in the engine's process only: they raise :class:`NotInTaskProcess`."""

    def __init__(
        self, job: JobInfo, upstream: dict[str, Any], send: Callable[[dict[str, Any]], None]
    ) -> None:
        # Not Context.__init__: no client, no loop, no lease here.
        self.job = job
        self.upstream = upstream
        self._send = send

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self._send({"type": "event", "kind": kind, "data": data})

    @property
    def pool(self) -> asyncpg.Pool:
        raise NotInTaskProcess("ctx.pool is not available in a process-pool task (executor='process')")

    @property
    def http(self) -> Fetcher:
        raise NotInTaskProcess("ctx.http is not available in a process-pool task (executor='process')")

    @http.setter
    def http(self, _value: Fetcher) -> None:
        raise NotInTaskProcess("ctx.http is not available in a process-pool task")

    async def enqueue(self, task: str, args: Any = None, *, key: str | None = None, **options: Any) -> Job:
        raise NotInTaskProcess(
            "ctx.enqueue is not available in a process-pool task (executor='process'):"
            " return what the next job needs, or run the enqueueing task on the event loop"
        )


class _Channel:
    """The answers, one JSON line each, on the pipe the parent reads (a task's own threads may
    log too: one line at a time)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


def _resident_mb() -> float:
    """This process's resident memory now (from /proc), else its peak (getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def _find(name: str, module: str | None) -> Any:
    if name not in registered and module:
        importlib.import_module(module)
    return registered.get(name)


def _upstream(raw: dict[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for step, value in (raw or {}).items():
        failure = value.get("failure")
        values[step] = UpstreamFailure(failure["state"], failure["error"]) if failure else value["result"]
    return values


def _error(exc: BaseException, retryable: bool) -> dict[str, Any]:
    return {"type": "error", "error": describe_error(exc), "retryable": retryable}


def run_one(request: dict[str, Any], channel: _Channel, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """Run one request's task; the final answer (its events were sent meanwhile)."""
    try:
        spec = _find(request["task"], request.get("module"))
        args = spec.validate_args(request["args"])
        job = JobInfo(*request["job"])
        ctx = ChildContext(
            job, typed_upstream(_upstream(request.get("upstream")), spec.upstream), channel.send
        )
    except (UnknownTaskError, InvalidArgumentsError, ImportError) as exc:  # the same next time
        return _error(exc, retryable=False)
    except SkiplockError as exc:  # a step's upstream that does not fit its model
        return _error(exc, retryable=exc.retryable)
    try:
        result = spec.fn(ctx, args)
        if inspect.isawaitable(result):
            result = loop.run_until_complete(result)
        return {"type": "result", "result": storable_json(result)}
    except Snooze as snooze:
        return {"type": "snooze", "seconds": snooze.seconds}
    except SkiplockError as exc:
        return _error(exc, retryable=exc.retryable)
    except BaseException as exc:  # SystemExit and the like are the task's own failure too
        return _error(exc, retryable=True)


def _die_with_parent(parent: int) -> None:
    """Never outlive the engine's process: a killed parent's job runs again elsewhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> NoReturn:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(_PARENT_WATCH_S)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="skiplock-parent-watch", daemon=True).start()


def main(modules: list[str]) -> int:
    # The answers go to a private copy of stdout; the task's own prints go to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    channel = _Channel(out)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when its children stop
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        _die_with_parent(int(parent))
    importlib.import_module("skiplock.tasks")  # the built-ins
    for module in modules:
        importlib.import_module(module)
    loop = asyncio.new_event_loop()
    channel.send({"type": "ready", "pid": os.getpid()})
    for line in sys.stdin.buffer:
        answer = run_one(json.loads(line), channel, loop)
        answer["rss_mb"] = round(_resident_mb(), 1)
        channel.send(answer)
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
