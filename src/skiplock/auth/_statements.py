"""The API keys' SQL, loaded from ``sql/keys.sql``."""

from __future__ import annotations

from dataclasses import dataclass

from skiplock.db.sqlfile import load_statements


@dataclass(frozen=True, slots=True)
class KeyStatements:
    key_insert: str
    key_list: str
    key_find: str
    key_revoke: str
    key_touch: str
    key_live_count: str
    instance_secret: str


KEYS = load_statements(KeyStatements, "skiplock.auth.sql", "keys.sql")
