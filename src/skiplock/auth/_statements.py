"""The API keys' SQL, loaded from ``sql/keys.sql``."""

from __future__ import annotations

from dataclasses import dataclass

from skiplock.db.sqlfile import Statement, load_statements


@dataclass(frozen=True, slots=True)
class KeyStatements:
    key_insert: Statement
    key_list: Statement
    key_find: Statement
    key_revoke: Statement
    key_touch: Statement
    key_live_count: Statement
    instance_secret: Statement


KEYS = load_statements(KeyStatements, "skiplock.auth.sql", "keys.sql")
