"""skiplock's pytest plugin, registered by the ``pytest11`` entry point ``skiplock`` (``-p
no:skiplock`` turns it off). Its fixtures, all named ``skiplock_…``:

- ``skiplock_admin_dsn`` (session): the server, ``SKIPLOCK_TEST_DATABASE_URL`` else an embedded one;
- ``skiplock_dsn``: a fresh database for the test, migrated (a copy of a template migrated once);
- ``skiplock_registry``: the tasks the client checks args against and ``drain()`` runs (override it
  to narrow them; default: every ``@task`` imported);
- ``skiplock_client``: a :class:`skiplock.Client` on that database, the one ``task.enqueue(...)`` uses;
- ``skiplock_kit``: :class:`skiplock.testing.Kit` (``assert_enqueued``, ``drain``, …) on both.

The async fixtures need pytest-asyncio (the ``testing`` extra); without it they fail saying so.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from skiplock._extras import missing
from skiplock.db.admin import create_database, create_migrated_template, drop_database
from skiplock.queue import Client, TaskRegistry, registered
from skiplock.testing._kit import Kit
from skiplock.testing._server import session_server

T = TypeVar("T")
_counter = itertools.count()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """A coroutine run to its end on a loop of its own, in a thread: a sync fixture may be set up
    while the test's loop exists, and must not depend on which loop that is."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(coroutine))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="skiplock-testing")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


@pytest.fixture(scope="session")
def skiplock_admin_dsn() -> Iterator[str]:
    """A server where the kit may create databases: ``SKIPLOCK_TEST_DATABASE_URL``, else an embedded
    PostgreSQL for the session (the ``embedded`` extra)."""
    with session_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def skiplock_template(skiplock_admin_dsn: str) -> Iterator[str]:
    """The name of a database migrated once for the session, that each test's database copies."""
    name = f"skiplock_kit_{os.getpid()}"
    _run(create_migrated_template(skiplock_admin_dsn, name))
    yield name
    _run(drop_database(skiplock_admin_dsn, name))


@pytest.fixture
def skiplock_dsn(skiplock_admin_dsn: str, skiplock_template: str) -> Iterator[str]:
    """The DSN of a fresh migrated database of this test's own, dropped after it."""
    name = f"skiplock_kit_{os.getpid()}_{next(_counter)}"
    yield _run(create_database(skiplock_admin_dsn, name, template=skiplock_template))
    _run(drop_database(skiplock_admin_dsn, name))


@pytest.fixture
def skiplock_registry() -> TaskRegistry:
    """The tasks of the test: every ``@task`` imported so far. Override it (a fixture of the same
    name returning ``TaskRegistry([...])``) to check and run only some."""
    return registered


try:
    import pytest_asyncio
except ImportError:  # the plugin still loads: only a test asking for the async fixtures fails

    @pytest.fixture
    def skiplock_client() -> Client:
        raise missing("testing", "skiplock_client (an async fixture)")

else:

    @pytest_asyncio.fixture
    async def skiplock_client(  # type: ignore[misc]  # this definition or the one above
        skiplock_dsn: str, skiplock_registry: TaskRegistry
    ) -> AsyncIterator[Client]:
        """A client on the test's database: ``await skiplock_client.enqueue(...)``."""
        client = await Client.connect(skiplock_dsn, registry=skiplock_registry, max_size=5)
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture
def skiplock_kit(skiplock_client: Client, skiplock_dsn: str, skiplock_registry: TaskRegistry) -> Kit:
    """The kit: ``await skiplock_kit.assert_enqueued(task, args)``, ``await skiplock_kit.drain()``."""
    return Kit(skiplock_client, skiplock_dsn, skiplock_registry)
