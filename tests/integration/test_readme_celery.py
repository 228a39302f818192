"""The README's "Coming from Celery" example runs as written: its tasks registered, a worker
running them, its ``main(dsn)`` against a real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skiplock.queue import Engine, Task, TaskRegistry, registered
from tests.conftest import make_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def celery_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Coming from Celery", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the Celery section has no Python example"
    return found.group(1)


@pytest.fixture
def example() -> Iterator[dict[str, Any]]:
    namespace: dict[str, Any] = {"__name__": "readme_celery"}
    exec(compile(celery_example(), "README.md (Coming from Celery)", "exec"), namespace)
    yield namespace
    for declared in tasks_of(namespace):  # the example's @task lines registered these: gone with it
        registered._tasks.pop(declared.name, None)


def tasks_of(namespace: dict[str, Any]) -> list[Task[Any]]:
    return [value for value in namespace.values() if isinstance(value, Task)]


async def test_the_celery_example_runs_as_written(dsn: str, example: dict[str, Any]) -> None:
    # The service the example's client talks to: a worker with the example's tasks (and the
    # schedule its weekly_digest declares).
    tasks = TaskRegistry(tasks_of(example))
    assert {t.name for t in tasks} == {"add", "total", "flaky", "weekly_digest"}
    async with Engine(make_settings(dsn), tasks, dsn):
        await example["main"](dsn)
