"""Who may do what: API keys and bearer tokens with scopes, and the rule that decides whether they
are required."""

from __future__ import annotations

from skiplock.auth.keys import ANONYMOUS, KEY_PREFIX, ApiKey, KeyStore, Principal, Scope, parse_scopes
from skiplock.auth.mode import AuthMode, decide_auth, decide_for, is_loopback
from skiplock.auth.tokens import TokenVerifier

# Sorted as str sorts (tests/unit/test_exports.py), not as ruff would (constants first).
__all__ = [  # noqa: RUF022
    "ANONYMOUS",
    "ApiKey",
    "AuthMode",
    "KEY_PREFIX",
    "KeyStore",
    "Principal",
    "Scope",
    "TokenVerifier",
    "decide_auth",
    "decide_for",
    "is_loopback",
    "parse_scopes",
]
