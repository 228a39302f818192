from __future__ import annotations

import pytest

from skiplock.errors import ConfigError
from skiplock.queue.engine import declared_queues, served_queues
from skiplock.queue.tasks import TaskRegistry
from skiplock.settings import Settings, parse_queue_spec
from skiplock.tasks import BUILTINS


def test_environment_is_read_with_the_prefix_and_database_url_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("SKIPLOCK_PORT", "9000")
    monkeypatch.setenv("SKIPLOCK_QUEUES", "default, media:2")
    monkeypatch.setenv("SKIPLOCK_TASK_MODULES", "a.jobs,b.jobs")
    settings = Settings.load()
    assert settings.database_url == "postgresql://db/x"
    assert settings.port == 9000
    assert settings.queues == ["default", "media:2"]
    assert settings.task_modules == ["a.jobs", "b.jobs"]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("SKIPLOCK_PORT", "eighty", "SKIPLOCK_PORT"),
        ("SKIPLOCK_CONCURRENCY", "0", "SKIPLOCK_CONCURRENCY"),
        ("SKIPLOCK_QUEUES", "media:zero", "SKIPLOCK_QUEUES"),
        ("SKIPLOCK_LOG_LEVEL", "loud", "SKIPLOCK_LOG_LEVEL"),
        ("SKIPLOCK_RATE_LIMIT", "lots", "SKIPLOCK_RATE_LIMIT"),
        ("SKIPLOCK_JWT_JWKS_URL", "https://idp.test/jwks", "needs jwt_audience (SKIPLOCK_JWT_AUDIENCE)"),
    ],
)
def test_bad_value_stops_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        Settings.load()
    assert words in error.value.message
    assert "\n" not in error.value.message


def test_queue_spec_parsing() -> None:
    assert parse_queue_spec("media:2") == ("media", 2)
    assert parse_queue_spec("default") == ("default", None)
    for bad in ("", ":3", "media:0", "media:-1"):
        with pytest.raises(ValueError, match="queue"):
            parse_queue_spec(bad)


def test_served_queues_default_to_default_plus_task_queues_capped_by_concurrency() -> None:
    registry = TaskRegistry(BUILTINS)
    assert served_queues(Settings(concurrency=8), registry) == {"default": 8}
    limited = Settings(concurrency=8, queues=["default:20", "media:2"])
    assert served_queues(limited, registry) == {"default": 8, "media": 2}


def test_every_queue_takes_a_per_process_limit_only() -> None:
    assert parse_queue_spec("*") == ("*", None)
    assert parse_queue_spec("*:4") == ("*", 4)
    for bad in ("*:0", "*:global=3", "*:4:rate=5/second", "*:x"):
        with pytest.raises(ValueError, match="'\\*' takes a per-process limit only"):
            parse_queue_spec(bad)
    with pytest.raises(ConfigError):
        Settings.load(queues="*:global=2")


def test_every_queue_serves_the_default_ones_too_each_with_its_limit() -> None:
    registry = TaskRegistry(BUILTINS)
    every = Settings(concurrency=8, queues=["*:3", "media:2"])
    assert declared_queues(every, registry) == {"*": 3, "media": 2, "default": 3}
    assert served_queues(every, registry) == {"media": 2, "default": 3}  # '*' is no queue
    assert declared_queues(Settings(concurrency=8, queues=["*"]), registry) == {"*": None, "default": None}
