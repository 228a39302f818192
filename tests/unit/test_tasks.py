from __future__ import annotations

import pytest
from pydantic import BaseModel

from skiplock.errors import InvalidArgumentsError, UnknownTaskError
from skiplock.queue.tasks import Task, TaskRegistry
from skiplock.tasks import BUILTINS, SleepArgs


class Args(BaseModel):
    count: int


async def _fn(ctx: object, args: Args) -> None:
    return None


def test_unknown_task_names_the_known_ones() -> None:
    registry = TaskRegistry(BUILTINS)
    with pytest.raises(UnknownTaskError) as error:
        registry.get("nope")
    assert error.value.extra == {"known": sorted(builtin.name for builtin in BUILTINS)}
    assert {"fetch_api", "import_csv", "scrape", "sleep"} <= set(error.value.extra["known"])
    assert "sleep" in error.value.message


def test_invalid_args_name_each_field() -> None:
    sleep = TaskRegistry(BUILTINS).get("sleep")
    with pytest.raises(InvalidArgumentsError) as error:
        sleep.validate_args({"seconds": 4000, "steps": "many"})
    fields = [e["field"] for e in error.value.extra["errors"]]
    assert fields == ["seconds", "steps"]


def test_valid_args_become_the_model() -> None:
    args = TaskRegistry(BUILTINS).get("sleep").validate_args({"seconds": 2})
    assert args == SleepArgs(seconds=2, steps=10, fail=False)


def test_the_same_name_for_two_functions_is_refused() -> None:
    registry = TaskRegistry([Task("count", _fn, Args)])

    async def other(ctx: object, args: Args) -> None:
        return None

    with pytest.raises(ValueError, match="twice"):
        registry.add(Task("count", other, Args))


def test_async_and_plain_functions_are_told_apart() -> None:
    def plain(ctx: object, args: Args) -> None:
        return None

    assert Task("a", _fn, Args).is_async
    assert not Task("b", plain, Args).is_async
