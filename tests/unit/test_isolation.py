"""The split that isolates refused items: what it writes, what it refuses, what it costs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiplock.queue._isolation import refused_for_values, write_isolating


class Recorder:
    """Stands in for a statement: refuses any batch holding a bad item, as the server would."""

    def __init__(self, bad: set[int], unavailable_after: int | None = None) -> None:
        self.bad = bad
        self.unavailable_after = unavailable_after
        self.written: list[int] = []
        self.refused: list[int] = []
        self.statements = 0

    async def write(self, items: Sequence[int]) -> None:
        self.statements += 1
        if self.unavailable_after is not None and self.statements > self.unavailable_after:
            raise ConnectionResetError("the server went away")
        if self.bad & set(items):
            raise asyncpg.CheckViolationError("new row violates check constraint")
        self.written += items

    async def refuse(self, item: int, exc: Exception) -> None:
        assert refused_for_values(exc)
        self.refused.append(item)


@given(n=st.integers(1, 300), data=st.data())
async def test_every_good_item_is_written_once_in_order_and_each_bad_one_refused_alone(
    n: int, data: st.DataObject
) -> None:
    bad = data.draw(st.sets(st.integers(0, n - 1), max_size=4))
    recorder = Recorder(bad)
    await write_isolating(list(range(n)), recorder.write, recorder.refuse)
    assert recorder.written == [i for i in range(n) if i not in bad]
    assert sorted(recorder.refused) == sorted(bad)
    assert recorder.statements <= 1 + 2 * len(bad) * (math.ceil(math.log2(n)) + 1)


async def test_an_unavailable_database_stops_the_split_and_raises() -> None:
    recorder = Recorder(bad={5}, unavailable_after=3)
    with pytest.raises(ConnectionResetError):
        await write_isolating(list(range(16)), recorder.write, recorder.refuse)
    assert recorder.refused == []  # nothing is given up for an error that says nothing of the values


def test_a_driver_that_cannot_encode_an_argument_counts_as_a_refusal() -> None:
    from asyncpg.exceptions._base import DataError as ClientDataError  # raised before sending

    assert refused_for_values(ClientDataError("invalid input for query argument $1"))
    assert refused_for_values(asyncpg.CheckViolationError("check"))
    assert not refused_for_values(ConnectionResetError())
    assert not refused_for_values(asyncpg.exceptions.SerializationError("retry"))
