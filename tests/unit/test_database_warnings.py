"""What the dashboard's banner says for the database's stats."""

from __future__ import annotations

from skiplock.db.stats import DatabaseStats
from skiplock.ui.health import XMIN_WARNING_AGE, warnings_of


def test_nothing_before_the_first_read_or_while_healthy() -> None:
    assert warnings_of(DatabaseStats(oldest_transaction_age_s=900), 300) == []  # never read
    healthy = DatabaseStats(oldest_transaction_age_s=10, notify_queue_usage=0.1, read_at=1)
    assert warnings_of(healthy, 300) == []


def test_each_reason_has_its_warning() -> None:
    (old,) = warnings_of(DatabaseStats(oldest_transaction_age_s=600, read_at=1), 300)
    assert "open for 10 min" in old
    (snapshot,) = warnings_of(DatabaseStats(oldest_xmin_age=XMIN_WARNING_AGE + 1, read_at=1), 300)
    assert "snapshot" in snapshot
    (slot,) = warnings_of(DatabaseStats(oldest_slot_xmin_age=XMIN_WARNING_AGE + 1, read_at=1), 300)
    assert "replication slot" in slot
    (notify,) = warnings_of(DatabaseStats(notify_queue_usage=0.6, read_at=1), 300)
    assert "60% full" in notify
