"""A real ``skiplock serve`` on a free port, and what the chaos tests drive it with: a steady
enqueue load, probes of /health, /ready and /metrics, and /ws/events subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import httpx
import orjson

from tests.support.live import free_port
from tests.support.waiting import wait_until
from tests.support.workers import spawn, stop_worker

#: Close codes that tell a /ws/events subscriber it may have missed events (resume or reload):
#: 4409 (events may have been missed: a listener reconnect, a failed read), 4429 (fell behind).
RESUME_CODES = frozenset({4409, 4429})


@dataclass
class Served:
    """One ``skiplock serve`` subprocess and an HTTP client bound to it."""

    process: subprocess.Popen[bytes]
    url: str
    http: httpx.AsyncClient
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of this process's /metrics (0 when absent)."""
        response = await self.http.get("/metrics")
        response.raise_for_status()
        return sample(response.text, name, **labels)

    def log_events(self) -> Counter[str]:
        """The events of the log lines it wrote (warnings and errors), counted."""
        found: Counter[str] = Counter()
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                if isinstance(entry, dict):
                    found[str(entry.get("event"))] += 1
        return found


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@asynccontextmanager
async def served(dsn: str, directory: Path, **settings: str) -> AsyncIterator[Served]:
    """``skiplock serve`` on ``dsn`` (already migrated), ready when this yields; stopped after."""
    port = free_port()
    log = directory / f"serve-{port}.log"
    process = spawn(dsn, "serve", "--port", str(port), stderr_to=log, RATE_LIMIT="off", **settings)
    url = f"http://127.0.0.1:{port}"
    http = httpx.AsyncClient(base_url=url, timeout=10)

    async def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"skiplock serve exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            return (await http.get("/ready")).status_code == 200
        return False

    try:
        await wait_until(ready, 60, 0.1)
        yield Served(process, url, http, log)
    finally:
        await http.aclose()
        await asyncio.to_thread(stop_worker, process)


def outcome(response: httpx.Response | BaseException) -> str:
    return str(response.status_code) if isinstance(response, httpx.Response) else type(response).__name__


class Background:
    """A loop (``_run``) that runs for the length of an ``async with``, told to stop on exit."""

    _stop: asyncio.Event
    _task: asyncio.Task[None] | None

    async def _run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


class EnqueueLoad(Background):
    """``POST /jobs`` every ``every_s``, round-robin over ``targets``, until the block ends: keeps
    the ids of accepted jobs and counts every answer by status (or by error when none came)."""

    def __init__(self, targets: Sequence[Served], body: dict[str, Any], every_s: float = 0.05) -> None:
        self.targets = targets
        self.body = body
        self.every_s = every_s
        self.accepted: list[int] = []
        self.answers: Counter[str] = Counter()
        self.bad: list[str] = []  # answers that are neither 2xx nor 503 with Retry-After
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        tick = time.monotonic()
        turn = 0
        while not self._stop.is_set():
            target = self.targets[turn % len(self.targets)]
            turn += 1
            try:
                response: httpx.Response | BaseException = await target.http.post(
                    "/jobs", json=self.body, timeout=5
                )
            except httpx.HTTPError as exc:
                response = exc
            self.answers[outcome(response)] += 1
            if isinstance(response, httpx.Response):
                if response.status_code in (200, 201):
                    self.accepted.append(response.json()["id"])
                elif response.status_code != 503 or "retry-after" not in response.headers:
                    self.bad.append(f"{response.status_code} {response.text[:200]}")
            tick += self.every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, tick - time.monotonic()))


@dataclass
class Probe(Background):
    """``GET`` each of ``paths`` on ``target`` every ``every_s``: every answer, timed."""

    target: Served
    paths: Sequence[str]
    every_s: float = 0.2
    answers: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic, path, outcome)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                try:
                    response: httpx.Response | BaseException = await self.target.http.get(path, timeout=5)
                except httpx.HTTPError as exc:
                    response = exc
                self.answers.append((time.monotonic(), path, outcome(response)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)

    def failures(self, path: str, expected: str = "200") -> list[str]:
        return [got for _, p, got in self.answers if p == path and got != expected]

    def count(self, path: str) -> int:
        return sum(1 for _, p, _ in self.answers if p == path)


class EventSubscriber:
    """One ``/ws/events`` client: the final state seen per job, and how the server closed it (a
    closed subscriber reconnects at once, as a client told to resume would)."""

    def __init__(self, target: Served) -> None:
        self.target = target
        self.finals: dict[int, str] = {}
        self.closes: Counter[int] = Counter()
        #: Each connection: (wall-clock start, end or None while open, close code or None).
        self.sessions: list[tuple[float, float | None, int | None]] = []
        self.connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                try:
                    async with session.ws_connect(f"{self.target.url}/ws/events", heartbeat=None) as ws:
                        self.sessions.append((time.time(), None, None))
                        self.connected.set()
                        async for message in ws:
                            if message.type != aiohttp.WSMsgType.TEXT:
                                break
                            event = orjson.loads(message.data)
                            if event.get("kind") == "state":
                                state = event["data"].get("state")
                                if state in ("succeeded", "failed", "cancelled"):
                                    self.finals[int(event["job_id"])] = state
                        if ws.close_code is not None:
                            self.closes[ws.close_code] += 1
                        self.sessions[-1] = (self.sessions[-1][0], time.time(), ws.close_code)
                except aiohttp.ClientError:
                    self.closes[-1] += 1  # no connection: the server is away or restarting
                self.connected.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.1)

    def silently_missed(self, finished_at: dict[int, float], margin_s: float = 0.2) -> list[int]:
        """Jobs whose final state this client never got although it was connected when the job
        finished (wall clock, from the database), on a connection that did not end with a resume
        code. A job that finished while it was away, or on a connection closed with a resume code
        (which tells the client to reload), may be missing."""
        silent = []
        for job_id, at in finished_at.items():
            if job_id in self.finals:
                continue
            for start, end, code in self.sessions:
                if start + margin_s < at and (end is None or at < end) and code not in RESUME_CODES:
                    silent.append(job_id)
                    break
        return sorted(silent)

    async def __aenter__(self) -> EventSubscriber:
        self._task = asyncio.create_task(self._run())
        await wait_until(self.connected.is_set, 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
