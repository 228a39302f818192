"""One PostgreSQL per run, a template database migrated once, a fresh database per test."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from skiplock.db import connect
from skiplock.db.admin import create_database, create_migrated_template, drop_database
from skiplock.logging import configure_logging
from skiplock.queue import Engine
from skiplock.settings import Settings
from skiplock.tasks import load_registry
from tests.support import tasks as test_tasks
from tests.support.live import app_client
from tests.support.servers import postgres_server

TEMPLATE = "skiplock_template"
PLUGIN = "skiplock.testing.plugin"
_counter = itertools.count()

TEST_TABLES = """
CREATE TABLE test_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL,
    marker text NOT NULL,
    attempt int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (job_id, marker, attempt)
)
"""


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("warning", "json", cache=False)
    # The testing kit's plugin: registered by its entry point once the project is installed with
    # it; a checkout run on an older install loads it here (never twice).
    if not config.pluginmanager.has_plugin("skiplock") and not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)


def pytest_report_header(config: pytest.Config) -> str:
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return "browser tests: run (chromium and chromedriver found)"
    return "browser tests: SKIPPED - install Debian's chromium and chromium-driver to run them"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    with postgres_server() as (dsn, kind):
        print(f"\ntests run on PostgreSQL from: {kind}")
        yield dsn


@pytest.fixture(scope="session")
def skiplock_admin_dsn(pg_admin_dsn: str) -> str:
    """The testing kit's fixtures on the suite's own server (testcontainers included)."""
    return pg_admin_dsn


@pytest.fixture(scope="session")
def skiplock_template(template_dsn: str) -> str:
    """... and copying the suite's template (migrated once) for each test's database."""
    return TEMPLATE


@pytest.fixture(scope="session")
async def template_dsn(pg_admin_dsn: str) -> str:
    dsn = await create_migrated_template(pg_admin_dsn, TEMPLATE)
    conn = await connect(dsn)
    try:
        await conn.execute(TEST_TABLES)
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def dsn(pg_admin_dsn: str, template_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test (commits and NOTIFY are real)."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    yield await create_database(pg_admin_dsn, name, template=TEMPLATE)
    await drop_database(pg_admin_dsn, name)


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's database, for setting up and asserting on rows."""
    conn = await connect(dsn)
    yield conn
    await conn.close()


def make_settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "poll_interval_s": 0.5,
        "rescue_interval_s": 0.5,
        "shutdown_grace_s": 1.0,
        "auto_migrate": False,
        "pool_min_size": 1,
        "pool_max_size": 5,
        "queues": [],
        "task_modules": [],
        "rate_limit": "off",  # tests poll hard; the limit has its own tests
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
async def shared_dsn(pg_admin_dsn: str, template_dsn: str) -> str:
    """One migrated database for tests that roll back everything they do."""
    return await create_database(pg_admin_dsn, f"shared_{os.getpid()}", template=TEMPLATE)


@pytest.fixture
async def tx(shared_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back: fast, for pure SQL tests."""
    conn = await connect(shared_dsn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


@pytest.fixture
def settings(dsn: str) -> Settings:
    return make_settings(dsn)


@pytest.fixture
def registry() -> Any:
    assert test_tasks.noop.name == "noop"  # imported: its @task lines registered
    return load_registry()


@pytest.fixture
async def engine(settings: Settings, registry: Any) -> AsyncIterator[Engine]:
    async with Engine(settings, registry, settings.database_url or "") as running:
        yield running


@pytest.fixture
async def api(settings: Settings, registry: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    """The whole app (engine and workers included) with the test tasks, through Litestar's client."""
    async with app_client(settings, registry) as client:
        yield client


@pytest.fixture(autouse=True)
def fresh_executions() -> None:
    """The thread tasks' in-memory record of their runs starts empty: job ids start at 1 in every
    test's database, so one test's rows read as another's (a lease test run after the thread
    tests found a thread "began" that was another test's)."""
    test_tasks.EXECUTIONS.clear()


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()

    def leftovers() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}

    for _ in range(50):
        if not leftovers():
            return
        await asyncio.sleep(0.02)
    names = sorted(t.get_name() for t in leftovers())
    for leftover in leftovers():
        leftover.cancel()
    pytest.fail(f"test left asyncio tasks running: {names}")
