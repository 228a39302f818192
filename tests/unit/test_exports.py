"""Each package's __all__ is complete and sorted (what httpx checks of its own)."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "skiplock",
    "skiplock.queue",
    "skiplock.db",
    "skiplock.api",
    "skiplock.tasks",
    "skiplock.tasks.import_csv",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported)
    for item in exported:
        assert hasattr(module, item), item
