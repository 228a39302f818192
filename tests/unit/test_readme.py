"""The README stays true: every setting is in its configuration table."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiplock.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    assert f"`SKIPLOCK_{field.upper()}`" in README or f"(or `SKIPLOCK_{field.upper()}`)" in README
