"""``skiplock jobs …`` and ``skiplock queues …`` from the shell, as real processes against the
configured database: text or ``--json`` on stdout, exit codes 0, 3 (no such job) and 4 (not in a
state that allows it)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from tests.support.workers import ROOT


def skiplock(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "DATABASE_URL": dsn,
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
        "SKIPLOCK_LOG_LEVEL": "warning",
        "SKIPLOCK_AUTO_MIGRATE": "false",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "skiplock", *args], env=env, capture_output=True, text=True, timeout=60
    )


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def at_once(dsn: str, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Commands that do not depend on each other, run side by side (each is a process start)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: skiplock(dsn, *args), commands))


def test_jobs_and_queues_from_the_shell(dsn: str) -> None:
    enqueue = ("jobs", "enqueue", "echo", "--args", '{"size": 3}', "--queue", "cli", "--delay", "60")
    enqueued, paused = at_once(dsn, enqueue, ("queues", "pause", "cli", "--json"))
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = int(enqueued.stdout)
    assert enqueued.stderr == f"enqueued 'echo' as job {job_id} on queue 'cli'\n"
    assert json_of(paused)["paused"] is True

    plan = '{"action": "delete", "filter": {}, "matched": 1}'
    listed, shown, missing, unknown, internal, resumed = at_once(
        dsn,
        ("jobs", "list", "--queue", "cli", "--json"),
        ("jobs", "show", str(job_id)),
        ("jobs", "show", "999999"),
        ("jobs", "enqueue", "no_such_task"),
        ("jobs", "enqueue", "bulk_jobs", "--args", plan),  # only POST /jobs/bulk makes one
        ("queues", "resume", "cli"),
    )
    [job] = json_of(listed)
    assert (job["id"], job["state"], job["args"]["size"]) == (job_id, "queued", 3)
    assert shown.returncode == 0, shown.stderr
    lines = set(shown.stdout.splitlines())
    assert {"state: queued", "task: echo", "queue: cli", 'args: {"fail":false,"size":3}'} <= lines
    assert (missing.returncode, missing.stderr) == (3, "skiplock: no job with id 999999\n")
    assert unknown.returncode == 3
    assert unknown.stderr.startswith("skiplock: unknown task 'no_such_task'")
    assert internal.returncode != 0
    assert "task 'bulk_jobs' is internal" in internal.stderr, internal.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("cli\tactive")

    assert json_of(skiplock(dsn, "jobs", "cancel", str(job_id), "--json"))["state"] == "cancelled"
    retried = skiplock(dsn, "jobs", "retry", str(job_id))
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.split("\t")[:4] == [str(job_id), "queued", "echo", "cli"]
    again = skiplock(dsn, "jobs", "retry", str(job_id))  # queued: nothing to retry
    assert (again.returncode, again.stdout) == (4, "")
    assert again.stderr.startswith(f"skiplock: cannot retry job {job_id} in state queued")
