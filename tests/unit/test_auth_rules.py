"""When keys are required, and what a scope allows."""

from __future__ import annotations

import pytest

from skiplock.auth import ANONYMOUS, AuthMode, Principal, Scope, decide_auth, is_loopback, parse_scopes
from skiplock.errors import ConfigError, InvalidArgumentsError


@pytest.mark.parametrize(
    ("setting", "host", "keys", "mode"),
    [
        ("off", "0.0.0.0", 0, AuthMode.OPEN),
        ("off", "127.0.0.1", 3, AuthMode.OPEN),
        ("on", "127.0.0.1", 0, AuthMode.KEYS),
        ("auto", "127.0.0.1", 0, AuthMode.OPEN),
        ("auto", "::1", 0, AuthMode.OPEN),
        ("auto", "localhost", 0, AuthMode.OPEN),
        ("auto", "127.0.0.1", 1, AuthMode.KEYS),
        ("auto", "0.0.0.0", 2, AuthMode.KEYS),
    ],
)
def test_the_auth_mode_follows_setting_bind_and_keys(
    setting: str, host: str, keys: int, mode: AuthMode
) -> None:
    assert decide_auth(setting, host, keys) is mode


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.org"])
def test_a_non_loopback_bind_without_keys_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigError, match="SKIPLOCK_AUTH=off"):
        decide_auth("auto", host, 0)


def test_loopback_addresses() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "[::1]", "localhost", "0.0.0.0", "h")] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


def test_scopes_parse_and_admin_allows_everything() -> None:
    assert parse_scopes("jobs:write, jobs:read,jobs:read") == [Scope.JOBS_READ, Scope.JOBS_WRITE]
    with pytest.raises(InvalidArgumentsError, match="unknown scope"):
        parse_scopes("jobs:read,root")
    with pytest.raises(InvalidArgumentsError, match="at least one"):
        parse_scopes(" , ")
    reader = Principal("r", frozenset({Scope.JOBS_READ}))
    assert reader.allows(Scope.JOBS_READ)
    assert not reader.allows(Scope.JOBS_WRITE)
    assert all(ANONYMOUS.allows(scope) for scope in Scope)
