"""Behind a transaction pooler: a direct URL is required, and nothing but the application name is sent
at connect."""

from __future__ import annotations

import pytest

from skiplock.db.pool import Limits
from skiplock.errors import ConfigError
from skiplock.settings import Settings


def test_a_transaction_pooler_needs_a_direct_url_for_listen() -> None:
    with pytest.raises(ConfigError, match="SKIPLOCK_LISTEN_DATABASE_URL"):
        Settings.load(database_url="postgresql://bouncer/db", database_pooler="transaction")
    settings = Settings.load(
        database_url="postgresql://bouncer/db",
        database_pooler="transaction",
        listen_database_url="postgresql://server/db",
    )
    assert settings.transaction_pooler
    assert settings.direct_database_url("postgresql://bouncer/db") == "postgresql://server/db"
    direct = Settings.load(database_url="postgresql://server/db")
    assert direct.direct_database_url("postgresql://server/db") == "postgresql://server/db"


def test_through_a_pooler_only_the_application_name_is_sent() -> None:
    limits = Limits(statement_s=30, lock_s=10, idle_in_transaction_s=30)
    assert limits.server_settings("skiplock", pooled=True) == {"application_name": "skiplock"}
    assert limits.server_settings("skiplock")["statement_timeout"] == "30000"
