"""The README's "Limits across replicas" examples run as written: three engines (the replicas),
each started with the section's SKIPLOCK_QUEUES, share the partner's budget of 100 calls a minute;
two engines hold a customer's backlog to 2 at a time while another customer's job starts at once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from skiplock.queue import Engine, Task, TaskRegistry, registered
from tests.conftest import make_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def limits_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split("## Limits across replicas", 1)[1].split("\n## ", 1)[0]


def run_example(index: int) -> Iterator[dict[str, Any]]:
    found = re.findall(r"```python\n(.*?)```", limits_section(), re.S)
    assert len(found) > index, "the Limits section lacks a Python example"
    namespace: dict[str, Any] = {"__name__": "readme_limits"}
    exec(compile(found[index], "README.md (Limits across replicas)", "exec"), namespace)
    yield namespace
    for value in namespace.values():  # the example's @task registered these: gone with it
        if isinstance(value, Task):
            registered._tasks.pop(value.name, None)


@pytest.fixture
def example() -> Iterator[dict[str, Any]]:
    yield from run_example(0)


@pytest.fixture
def keyed_example() -> Iterator[dict[str, Any]]:
    yield from run_example(1)


async def test_the_limits_example_runs_as_written_on_three_replicas(
    dsn: str, example: dict[str, Any]
) -> None:
    queues = re.search(r"SKIPLOCK_QUEUES=(\S+)`", limits_section())
    assert queues, "the section names no SKIPLOCK_QUEUES"
    tasks = TaskRegistry([v for v in example.values() if isinstance(v, Task)])
    async with AsyncExitStack() as replicas:
        for _ in range(3):
            settings = make_settings(dsn, queues=queues.group(1).split(","))
            await replicas.enter_async_context(Engine(settings, tasks, dsn))
        await example["main"](dsn)


async def test_the_per_key_example_runs_as_written_on_two_replicas(
    dsn: str, keyed_example: dict[str, Any]
) -> None:
    tasks = TaskRegistry([v for v in keyed_example.values() if isinstance(v, Task)])
    async with AsyncExitStack() as replicas:
        for _ in range(2):
            settings = make_settings(dsn, queues=["sync"], shutdown_grace_s=0.1)
            await replicas.enter_async_context(Engine(settings, tasks, dsn))
        await keyed_example["main"](dsn)
