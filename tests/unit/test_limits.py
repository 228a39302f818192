"""Rates and queue declarations: what SKIPLOCK_QUEUES and PATCH /queues/{name} accept."""

from __future__ import annotations

import pytest

from skiplock.rates import Rate
from skiplock.settings import QueueSpec, parse_queue_declaration


def test_rates_parse_per_unit_and_print_back() -> None:
    assert Rate.parse("100/minute") == Rate(100, 60.0)
    assert Rate.parse(" 5/Second ") == Rate(5, 1.0)
    assert str(Rate.parse("3/day")) == "3/day"
    for bad in (
        "100",
        "1.5/second",
        "0/second",
        "-1/second",
        "10/fortnight",
        "10/ minute",
        "10001/hour",
        "/s",
    ):
        with pytest.raises(ValueError, match="rate"):
            Rate.parse(bad)


def test_queue_declarations_carry_limits_across_replicas() -> None:
    assert parse_queue_declaration("partner:4:global=5:rate=100/minute") == QueueSpec(
        "partner", 4, 5, Rate(100, 60.0)
    )
    assert parse_queue_declaration("partner:rate=5/second") == QueueSpec("partner", None, None, Rate(5, 1.0))
    assert parse_queue_declaration("media") == QueueSpec("media", None)
    for bad in (
        "partner:global=-1",
        "partner:global=1.5",
        "partner:burst=3",
        "partner:rate=5",
        "p:global=5:4",
    ):
        with pytest.raises(ValueError, match=r"queue|rate"):
            parse_queue_declaration(bad)
