"""The warning every dashboard page shows while the database is in a state that makes a queue
spiral: the xmin horizon pinned (vacuum can remove no dead row newer than it, so the jobs table
and its indexes grow and every claim reads more), or the NOTIFY queue filling (at 100 % every
NOTIFY fails, and with it every enqueue's wake-up). From the stats /metrics reads, at most every
few seconds: a page view never adds a read."""

from __future__ import annotations

from typing import Any

from litestar import Request

from skiplock.api import SkiplockPlugin, database_stats
from skiplock.db.stats import DatabaseStats

#: Transactions since the oldest snapshot (a session's, a standby's feedback, a replication
#: slot's) past which the horizon counts as pinned, whatever the clock says: at the engine's rate
#: of a few thousand transactions a second, some minutes of dead rows vacuum cannot remove.
XMIN_WARNING_AGE = 1_000_000
#: The NOTIFY queue's use past which the dashboard warns (at 1 every NOTIFY fails).
NOTIFY_WARNING_USAGE = 0.5


def warnings_of(stats: DatabaseStats, transaction_age_s: float) -> list[str]:
    """What the banner says for ``stats`` (none when it was never read): a transaction open longer
    than ``transaction_age_s``, a snapshot or a replication slot older than
    :data:`XMIN_WARNING_AGE` transactions, the NOTIFY queue over half full."""
    if not stats.read_at:
        return []
    found: list[str] = []
    if stats.oldest_transaction_age_s > transaction_age_s:
        found.append(
            f"A transaction has been open for {stats.oldest_transaction_age_s / 60:.0f} min: vacuum"
            " cannot remove dead rows newer than its snapshot, so the jobs table grows and claims"
            " slow down. Find it in pg_stat_activity (oldest xact_start) and end it."
        )
    elif stats.oldest_xmin_age > XMIN_WARNING_AGE:
        found.append(
            f"A snapshot is {stats.oldest_xmin_age:,} transactions old (a session or a standby's"
            " hot_standby_feedback): vacuum cannot remove the dead rows newer than it."
        )
    if stats.oldest_slot_xmin_age > XMIN_WARNING_AGE:
        found.append(
            f"A replication slot holds the xmin horizon {stats.oldest_slot_xmin_age:,} transactions"
            " back: vacuum cannot remove dead rows newer than it. Drop the slot if its standby or"
            " subscriber is gone (pg_replication_slots)."
        )
    if stats.notify_queue_usage > NOTIFY_WARNING_USAGE:
        found.append(
            f"The NOTIFY queue is {stats.notify_queue_usage:.0%} full: a listening session inside a"
            " long transaction keeps it from draining; at 100 % enqueues fail."
        )
    return found


async def read_health(request: Request[Any, Any, Any]) -> None:
    """``before_request`` of the dashboard's pages: the stats (at most every few seconds, shared
    with /metrics) on ``request.state.database_warnings`` for the base template."""
    engine = request.app.plugins.get(SkiplockPlugin).engine
    stats = await database_stats(request.app, engine)
    request.state.database_warnings = warnings_of(stats, engine.settings.horizon_warning_s)
