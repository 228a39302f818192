"""The per-job metrics: plain numbers exposed as prometheus_client would expose its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from skiplock import metrics


def _lines(text: bytes, name: str) -> list[str]:
    return [line for line in text.decode().splitlines() if line.startswith(name) and "_created" not in line]


def test_job_histograms_and_counters_expose_what_prometheus_clients_own_would() -> None:
    ours = metrics.LockFreeHistogram("t_seconds", "doc", ("queue",), buckets=(0.1, 1, 10), register=False)
    theirs_registry = CollectorRegistry()
    theirs = Histogram("t_seconds", "doc", ("queue",), buckets=(0.1, 1, 10), registry=theirs_registry)
    counted = metrics.LockFreeCounter("t_total", "doc", ("queue",), register=False)
    their_counter = Counter("t_total", "doc", ("queue",), registry=theirs_registry)
    for value in (0.0, 0.1, 0.5, 1.0, 7, 10, 11, 1e9):  # bounds are inclusive (le)
        ours.labels("q").observe(value)
        theirs.labels("q").observe(value)
    counted.labels("q").inc()
    counted.labels("q").inc(2)
    their_counter.labels("q").inc(3)
    registry = CollectorRegistry()
    registry.register(ours)
    registry.register(counted)
    mine, expected = generate_latest(registry), generate_latest(theirs_registry)
    assert _lines(mine, "t_seconds") == _lines(expected, "t_seconds")
    assert _lines(mine, "t_total") == _lines(expected, "t_total")
    assert b"t_seconds_created{" in mine
    assert b"t_created{" in mine


def test_a_job_metric_child_is_looked_up_once_per_label_set() -> None:
    assert metrics.for_job("q", "t").started is metrics.jobs_started.labels("q", "t")
    assert metrics.finished("q", "t", "succeeded") is metrics.jobs_finished.labels("q", "t", "succeeded")
