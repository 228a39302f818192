"""Who may do what: API keys with scopes, and the rule that decides whether they are required."""

from __future__ import annotations

from skiplock.auth.keys import ANONYMOUS, ApiKey, KeyStore, Principal, Scope, parse_scopes
from skiplock.auth.mode import AuthMode, decide_auth, decide_for, is_loopback

__all__ = [
    "ANONYMOUS",
    "ApiKey",
    "AuthMode",
    "KeyStore",
    "Principal",
    "Scope",
    "decide_auth",
    "decide_for",
    "is_loopback",
    "parse_scopes",
]
