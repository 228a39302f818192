"""The task process pool: ``@task(..., executor="process")`` jobs run in child processes.

Each child (``python -m skiplock.queue._child``, a fresh interpreter: never a fork of a process
with an event loop and open connections) runs one job at a time, speaking JSON lines over its
pipes (see _child.py). Unlike a thread, a child can be stopped: a time limit, a cancel, a lost
lease or the end of the shutdown grace kill it (SIGKILL), and its job is reported only once it
is reaped, so a later attempt never overlaps it. A child that dies on its own (a crash,
``os._exit``, the OOM killer) fails that attempt and is replaced by the next job that needs one.
Children are started on demand, up to the pool's size (``warm`` of them are started with the
pool and replaced as they retire, so a job finds one ready), and retired after ``max_tasks`` jobs
or once their resident memory, read after each job, is over ``max_memory_mb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from skiplock import metrics
from skiplock.errors import Snooze, TaskProcessCrashed

log = structlog.get_logger("skiplock.processes")

CHILD_MODULE = "skiplock.queue._child"
PARENT_ENV = "SKIPLOCK_CHILD_PARENT"  # the same as _child's (not imported: it loads the tasks)
#: The longest answer line (a result, a log line) a child may write.
LINE_LIMIT = 256 * 1024 * 1024
#: A killed child is reaped within milliseconds; one that is not within this (stuck in the
#: kernel) is left behind, and its job handled as a thread's that still runs.
REAP_S = 5.0
#: A new child imports skiplock and the task modules in about a second; one not ready in this is killed.
START_S = 60.0
#: A retired or closing child has this long to leave on its own before it is killed.
RETIRE_S = 1.0


class ChildTaskFailed(Exception):
    """The task raised in its child: the error as the child described it (type, message,
    traceback) and whether another attempt may succeed."""

    def __init__(self, error: dict[str, Any], retryable: bool) -> None:
        super().__init__(error.get("message", ""))
        self.error = error
        self.retryable = retryable


def _ended(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = " (the out-of-memory killer?)" if -returncode == signal.SIGKILL else ""
        return f"was killed by {name}{why}"
    return f"exited with code {returncode}"


class TaskProcess:
    """One child and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.tasks_done = 0
        self.rss_mb = 0.0
        #: A request was sent and its final answer has not arrived: not to be reused.
        self.in_call = False

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def call(self, request: dict[str, Any], on_event: Callable[[str, dict[str, Any]], None]) -> Any:
        """Send ``request`` and return the task's result; its events go to ``on_event`` as they
        come. Raises ChildTaskFailed, Snooze (from the errors the child reports) or
        TaskProcessCrashed (the child ended before it answered)."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        self.in_call = True
        try:
            stdin.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died: its stdout ends too, read below
        while True:
            line = await stdout.readline()
            if not line:
                metrics.task_process_exits.labels(reason="crashed").inc()
                # Its pipe closed as it died: wait for its exit status first, for a kill now would
                # reap it out of asyncio's hands (Popen polls before it signals) and lose the status.
                if not await self._reaped(RETIRE_S):
                    await self.kill(count=False)
                raise TaskProcessCrashed(
                    f"the task's process (pid {self.pid}) {_ended(self.proc.returncode)} before it answered"
                )
            message = json.loads(line)
            kind = message["type"]
            if kind == "event":
                on_event(message["kind"], message["data"])
                continue
            self.in_call = False
            self.tasks_done += 1
            self.rss_mb = float(message.get("rss_mb") or 0.0)
            if kind == "result":
                return message["result"]
            if kind == "snooze":
                raise Snooze(message["seconds"])
            raise ChildTaskFailed(message["error"], bool(message["retryable"]))

    async def kill(self, *, count: bool = True) -> bool:
        """SIGKILL and reap it, whatever cancels the caller meanwhile (the child is surely gone
        when this returns True; False: not reaped within REAP_S)."""
        if self.proc.returncode is None:
            if count:
                metrics.task_process_exits.labels(reason="killed").inc()
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        return await self._reaped(REAP_S)

    async def _reaped(self, within_s: float) -> bool:
        waiter = asyncio.ensure_future(self.proc.wait())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        cancelled = False
        try:
            while not waiter.done() and loop.time() < deadline:
                try:
                    await asyncio.wait({waiter}, timeout=deadline - loop.time())
                except asyncio.CancelledError:
                    cancelled = True  # passed on once the child is gone (milliseconds)
        finally:
            if not waiter.done():
                waiter.cancel()
        if cancelled:
            raise asyncio.CancelledError
        return self.proc.returncode is not None

    async def retire(self) -> None:
        """Let it leave (its stdin closes), or kill it after RETIRE_S."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.close()
        if not await self._reaped(RETIRE_S):
            await self.kill()


class TaskProcesses:
    """Up to ``size`` children; ``acquire`` one, ``call`` it, ``release`` it."""

    def __init__(
        self,
        size: int,
        *,
        modules: Sequence[str] = (),
        max_tasks: int = 0,
        max_memory_mb: int = 0,
        warm: int = 0,
    ) -> None:
        self.size = size
        #: Children kept started, idle or busy (at most ``size``): a job need not wait for one's start.
        self.warm = min(warm, size)
        self.modules = list(modules)
        self.max_tasks = max_tasks  # 0: no limit
        self.max_memory_mb = max_memory_mb  # 0: no limit
        self._slots = asyncio.Semaphore(size)
        self._idle: list[TaskProcess] = []
        self._children: set[TaskProcess] = set()
        self._closed = False
        self._warming: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the warm children in the background (and again whenever one retires)."""
        if self.warm and not self._closed and (self._warming is None or self._warming.done()):
            self._warming = asyncio.create_task(self._keep_warm(), name="skiplock:processes-warm")

    async def _keep_warm(self) -> None:
        while not self._closed and len(self._children) < self.warm:
            await self._slots.acquire()  # a slot while it starts: never more than size children
            try:
                if self._closed or len(self._children) >= self.warm:
                    return
                try:
                    child = await self._spawn()
                except TaskProcessCrashed as exc:  # a job's own start reports it; not retried in a loop
                    log.warning("task_process_warm_failed", error=str(exc))
                    return
                self._idle.append(child)
            finally:
                self._slots.release()

    def pids(self) -> list[int]:
        """The live children's pids (tests, metrics)."""
        return sorted(c.pid for c in self._children if c.alive)

    def idle_pids(self) -> list[int]:
        """The children started and waiting for a job."""
        return sorted(c.pid for c in self._idle if c.alive)

    async def acquire(self) -> TaskProcess:
        """An idle child, or a new one while fewer than ``size`` run; else wait for one."""
        await self._slots.acquire()
        try:
            while self._idle:
                child = self._idle.pop()
                if child.alive:
                    return child
                self._children.discard(child)  # died while idle: its job was not there
            return await self._spawn()
        except BaseException:
            self._slots.release()
            raise

    async def release(self, child: TaskProcess) -> None:
        """Give ``child`` back: kept for the next job, unless it is worn out, ended or was
        interrupted; then it is retired (gone when this returns)."""
        self._slots.release()
        if child.alive and not child.in_call and not self._closed and not self._worn_out(child):
            self._idle.append(child)
            return
        self._children.discard(child)
        await child.retire()
        self.start()  # its place taken before the next job asks

    def _worn_out(self, child: TaskProcess) -> bool:
        if self.max_tasks and child.tasks_done >= self.max_tasks:
            metrics.task_process_exits.labels(reason="recycled").inc()
            log.info("task_process_recycled", pid=child.pid, reason="max_tasks", tasks=child.tasks_done)
            return True
        if self.max_memory_mb and child.rss_mb > self.max_memory_mb:
            metrics.task_process_exits.labels(reason="recycled").inc()
            log.info("task_process_recycled", pid=child.pid, reason="max_memory", rss_mb=child.rss_mb)
            return True
        return False

    async def _spawn(self) -> TaskProcess:
        env = dict(os.environ)
        env[PARENT_ENV] = str(os.getpid())
        # The child finds the task modules where this process found them.
        path = [p for p in sys.path if p] + env.get("PYTHONPATH", "").split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in path if p))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            CHILD_MODULE,
            *self.modules,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=LINE_LIMIT,
            start_new_session=True,  # a terminal's Ctrl-C is the parent's to handle
        )
        child = TaskProcess(proc)
        self._children.add(child)
        try:
            assert proc.stdout is not None
            try:
                async with asyncio.timeout(START_S):
                    line = await proc.stdout.readline()
            except TimeoutError:
                await child.kill()
                raise TaskProcessCrashed(
                    f"the task's process (pid {child.pid}) was not ready within {START_S:g}s (its task"
                    " modules' import hangs?)"
                ) from None
            if not line or json.loads(line).get("type") != "ready":
                if not await child._reaped(RETIRE_S):  # its exit status first (see call)
                    await child.kill(count=False)
                raise TaskProcessCrashed(
                    f"the task's process (pid {child.pid}) {_ended(proc.returncode)} while starting"
                    " (its stderr says why)"
                )
        except BaseException:
            self._children.discard(child)
            await child.kill()
            raise
        log.debug("task_process_started", pid=child.pid)
        return child

    async def close(self) -> None:
        """Retire every child; any still running a job (there should be none) is killed."""
        self._closed = True
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        idle, self._idle = self._idle, []
        busy = [c for c in self._children if c not in idle]
        self._children.clear()
        await asyncio.gather(*(c.retire() for c in idle), *(c.kill() for c in busy))


__all__ = ["ChildTaskFailed", "TaskProcess", "TaskProcessCrashed", "TaskProcesses"]
