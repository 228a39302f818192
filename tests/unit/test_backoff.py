from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiplock.queue.backoff import Backoff


def test_delay_doubles_per_attempt_without_jitter() -> None:
    backoff = Backoff(base_s=1.0, max_s=100.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]


def test_delay_is_capped() -> None:
    assert Backoff(base_s=1.0, max_s=30.0, jitter=0.0).delay(50) == 30.0


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=100, max_value=86_400),
    jitter=st.floats(min_value=0, max_value=0.99),
    rand=st.floats(min_value=0, max_value=1),
)
def test_delay_stays_within_jitter_of_the_capped_exponential(
    attempt: int, base: float, cap: float, jitter: float, rand: float
) -> None:
    raw = min(base * 2.0 ** min(attempt - 1, 62), cap)
    delay = Backoff(base_s=base, max_s=cap, jitter=jitter).delay(attempt, rand=lambda: rand)
    assert raw * (1 - jitter) - 1e-9 <= delay <= raw * (1 + jitter) + 1e-9


@pytest.mark.parametrize("kwargs", [{"base_s": -1}, {"base_s": 10, "max_s": 5}, {"jitter": 1.0}])
def test_invalid_backoff_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)
