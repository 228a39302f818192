"""One log format: every line ``skiplock serve`` writes, its own and the standard library's
(uvicorn's, asyncio's, a task's libraries'), is a JSON object of the same shape, with the request's
and the job's context bound."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support.live import free_port
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, stop_worker

SHAPE = {"event", "level", "timestamp", "logger"}


def serve(dsn: str, port: int, stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
    """``skiplock serve`` at info level, its stdout and stderr each to a file."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "SKIPLOCK_TASK_MODULES": "tests.support.logging_tasks",
        "SKIPLOCK_LOG_FORMAT": "json",
        "SKIPLOCK_LOG_LEVEL": "info",
        "SKIPLOCK_AUTO_MIGRATE": "false",
        "SKIPLOCK_RATE_LIMIT": "off",
        "SKIPLOCK_PORT": str(port),
    }
    env.pop("SKIPLOCK_TEST_DATABASE_URL", None)
    with stdout.open("wb") as out, stderr.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "skiplock", "serve"], env=env, stdout=out, stderr=err)


def lines_of(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_bytes().splitlines():
        entry = orjson.loads(line)  # a line that is not JSON fails here, quoted
        assert isinstance(entry, dict), line
        assert entry.keys() >= SHAPE, line
        entries.append(entry)
    return entries


async def test_every_line_of_serve_is_json_of_one_shape(dsn: str, tmp_path: Path) -> None:
    port, stderr, stdout = free_port(), tmp_path / "stderr", tmp_path / "stdout"
    process = serve(dsn, port, stdout, stderr)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            async def ready() -> bool:
                assert process.poll() is None, stderr.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/ready")).status_code == 200
                return False

            await wait_until(ready, 60, 0.1)
            body = {"task": "stdlib_logs", "args": {"text": "hello"}}
            created = await http.post("/jobs", json=body, headers={"x-request-id": "req-42"})
            job_id = created.json()["id"]
            ended = await http.get(f"/jobs/{job_id}/result", params={"wait": 20})
            assert ended.json()["state"] == "succeeded"
    finally:
        await asyncio.to_thread(stop_worker, process)
    assert lines_of(stdout) == []
    entries = lines_of(stderr)
    by_event = {entry["event"]: entry for entry in entries}
    assert by_event["Application startup complete."]["logger"] == "uvicorn.error"
    request = next(e for e in entries if e["event"] == "http_request" and e["path"] == "/jobs")
    assert (request["request_id"], request["logger"]) == ("req-42", "skiplock.http")
    for event, logger in (("a library says hello", "tests.stdlib"), ("asyncio says hello", "asyncio")):
        assert (by_event[event]["logger"], by_event[event]["job_id"]) == (logger, job_id)
        assert by_event[event]["level"] in {"warning", "error"}
