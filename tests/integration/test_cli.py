"""The ``skiplock`` command as a user runs it: a console script (its own directory first on
sys.path, not the working directory), in a directory of the user's choosing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from skiplock import __version__
from skiplock.db import connect
from skiplock.queue import JobState
from tests.factories import job
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, stop_worker

USER_TASKS = """
from pydantic import BaseModel

from skiplock import Context, task


class Greeting(BaseModel):
    name: str


@task("greet", args=Greeting)
async def greet(ctx: Context, args: Greeting) -> str:
    return f"hello {args.name}"
"""


@pytest.fixture(scope="module")
def entry_point(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``pip install`` writes as bin/skiplock."""
    script = tmp_path_factory.mktemp("bin") / "skiplock"
    script.write_text("import sys\nfrom skiplock.cli import main\nsys.exit(main())\n")
    return script


def environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKIPLOCK_", "DATABASE_URL"))}
    env["PYTHONPATH"] = str(ROOT / "src")  # this checkout's skiplock, and not the working directory
    env.update(values)
    return env


def skiplock(
    entry_point: Path, *args: str, cwd: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(entry_point), *args],
        cwd=cwd,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(entry_point: Path, *args: str, cwd: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, str(entry_point), *args], cwd=cwd, env=environment(**env), stderr=stderr
        )


def test_version_prints_the_packages_version(entry_point: Path, tmp_path: Path) -> None:
    done = skiplock(entry_point, "--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"skiplock {__version__}\n")


def test_db_url_prints_database_url_when_it_is_set(entry_point: Path, tmp_path: Path) -> None:
    url = "postgresql://app:secret@db.internal:5432/jobs"
    done = skiplock(entry_point, "db-url", cwd=tmp_path, DATABASE_URL=url)
    assert (done.returncode, done.stdout, done.stderr) == (0, url + "\n", "")


def test_db_url_of_a_stopped_embedded_server_says_how_to_start_it(entry_point: Path, tmp_path: Path) -> None:
    done = skiplock(entry_point, "db-url", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == f"postgresql://postgres@/postgres?host={tmp_path / '.skiplock' / 'pg'}\n"
    assert "is not running: `make run` (or `skiplock serve`) in this directory starts it" in done.stderr
    assert not (tmp_path / ".skiplock").exists()  # nothing started, nothing made


async def test_db_url_of_a_running_embedded_server_connects(
    entry_point: Path, tmp_path: Path, pg_admin_dsn: str
) -> None:
    host = Path(parse_qs(urlsplit(pg_admin_dsn).query).get("host", [""])[0])
    if not (host / "PG_VERSION").is_file():
        pytest.skip("the suite's PostgreSQL is not an embedded server")
    done = skiplock(entry_point, "db-url", cwd=tmp_path, SKIPLOCK_DATA_DIR=str(host.parent))
    assert (done.returncode, done.stderr) == (0, "")
    conn = await asyncpg.connect(done.stdout.strip())  # what psql "$(skiplock db-url)" gets
    try:
        assert await conn.fetchval("SELECT current_database()") == "postgres"
    finally:
        await conn.close()


async def test_task_modules_are_found_in_the_working_directory(
    entry_point: Path, tmp_path: Path, dsn: str
) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(USER_TASKS)
    conn = await connect(dsn)
    try:
        job_id = await job(conn, task="greet", args={"name": "ada"})
        log = tmp_path / "worker.log"
        worker = start(
            entry_point, "worker", cwd=tmp_path, log=log, DATABASE_URL=dsn, SKIPLOCK_TASK_MODULES="myapp.jobs"
        )
        try:

            async def finished() -> asyncpg.Record | None:
                assert worker.poll() is None, log.read_text()
                return await conn.fetchrow(
                    "SELECT state, result FROM jobs WHERE id = $1 AND state = 'succeeded'", job_id
                )

            row = await wait_until(finished, 60, 0.1)
        finally:
            await asyncio.to_thread(stop_worker, worker)
        assert (row["state"], row["result"]) == (JobState.SUCCEEDED.value, "hello ada")
    finally:
        await conn.close()


def test_a_task_module_not_found_says_where_it_was_looked_for(entry_point: Path, tmp_path: Path) -> None:
    done = skiplock(
        entry_point,
        "worker",
        cwd=tmp_path,
        DATABASE_URL="postgresql://nobody@/none?host=/nonexistent",
        SKIPLOCK_TASK_MODULES="myapp.jobs",
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "skiplock: SKIPLOCK_TASK_MODULES: cannot import 'myapp.jobs': No module named 'myapp'; looked in the"
        f" working directory ({tmp_path}), PYTHONPATH and the installed packages: run skiplock from the"
        " directory that holds 'myapp', or add that directory to PYTHONPATH"
    )
