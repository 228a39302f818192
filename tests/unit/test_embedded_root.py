"""As root, the embedded server runs as an OS user of its own and opens the directories above its
data and binaries to it: said at warning, with what was created and changed, never silently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from skiplock.db.embedded import EmbeddedPostgres


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes the embedded server change the system")
def test_as_root_what_is_created_and_opened_is_logged_at_warning(tmp_path: Path) -> None:
    checkout = tmp_path / "closed" / "checkout"
    checkout.mkdir(parents=True)
    for directory in (checkout, checkout.parent):
        directory.chmod(0o700)
    server = EmbeddedPostgres(checkout / ".skiplock" / "pg")
    (checkout / ".skiplock").mkdir()
    with capture_logs() as logs:
        assert server._pick_user() == "skiplock_pg"
        assert server._pick_user() == "skiplock_pg"  # nothing left to change: not said again
    said = [entry for entry in logs if entry["event"] == "embedded_postgres_as_root"]
    assert len(said) == 1
    assert said[0]["log_level"] == "warning"
    assert said[0]["os_user"] == "skiplock_pg"
    assert {str(checkout), str(checkout.parent)} <= set(said[0]["directories_opened"])
    assert said[0]["to_avoid"] == "run skiplock as a user other than root, or set DATABASE_URL"
    assert all(d.stat().st_mode & 0o001 for d in (checkout, checkout.parent))
