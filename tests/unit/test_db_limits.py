"""The engine's connection limits: what is sent to the server, and the defaults a healthy system
never reaches."""

from __future__ import annotations

from skiplock.db.pool import Limits, engine_limits, task_limits
from skiplock.settings import Settings


def test_only_the_limits_that_are_set_are_sent_in_milliseconds_with_keepalives() -> None:
    sent = Limits(statement_s=30, lock_s=0.25).server_settings("skiplock-listener")
    assert sent["application_name"] == "skiplock-listener"
    assert (sent["statement_timeout"], sent["lock_timeout"]) == ("30000", "250")
    assert "idle_in_transaction_session_timeout" not in sent  # left to the server's configuration
    assert sent["tcp_keepalives_idle"] == "30"


def test_the_driver_waits_a_little_longer_than_the_server_and_not_at_all_without_a_limit() -> None:
    assert Limits(statement_s=30).command_s == 35
    assert Limits().command_s is None


def test_engine_connections_are_bounded_and_the_tasks_pool_cuts_no_statement() -> None:
    settings = Settings(database_url="postgresql://x/y")
    engine, tasks = engine_limits(settings), task_limits(settings)
    assert (engine.connect_s, engine.acquire_s, engine.statement_s, engine.lock_s) == (10, 10, 30, 10)
    assert engine.idle_in_transaction_s == 30  # a lease at most (lease_s), the setting being 60
    assert (tasks.statement_s, tasks.lock_s, tasks.acquire_s) == (0, 0, 0)
    assert tasks.idle_in_transaction_s == 60


def test_an_engine_transaction_is_ended_within_a_lease_whatever_the_setting() -> None:
    for idle, lease, expected in ((60, 30, 30), (5, 30, 5), (0, 12, 12)):
        settings = Settings(
            database_url="postgresql://x/y", db_idle_in_transaction_timeout_s=idle, lease_s=lease
        )
        assert engine_limits(settings).idle_in_transaction_s == expected
        assert task_limits(settings).idle_in_transaction_s == idle
