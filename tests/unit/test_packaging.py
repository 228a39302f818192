"""What a wheel of skiplock carries and promises: the MIT licence it declares, ``py.typed``, one
version, and the optional parts as extras (each missing one a ConfigError naming it)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from skiplock import __version__
from skiplock._extras import EXTRAS
from skiplock.errors import ConfigError
from skiplock.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def test_the_license_file_is_the_mit_licence_the_metadata_declares() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 skiplock authors" in text
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]


def test_the_package_is_marked_typed_and_the_wheel_ships_the_whole_package() -> None:
    assert (ROOT / "src" / "skiplock" / "py.typed").is_file()
    assert PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/skiplock"]


def test_the_version_is_written_in_one_place() -> None:
    assert "version" not in PROJECT
    assert PROJECT["dynamic"] == ["version"]
    version_file = ROOT / PYPROJECT["tool"]["hatch"]["version"]["path"]
    assert version_file == ROOT / "src" / "skiplock" / "_version.py"
    assert f'__version__ = "{__version__}"' in version_file.read_text(encoding="utf-8")


def test_the_optional_parts_are_extras_and_not_dependencies() -> None:
    extras = PROJECT["optional-dependencies"]
    required = " ".join(PROJECT["dependencies"])
    for extra in EXTRAS:
        assert extras[extra], extra
        for requirement in extras[extra]:
            assert requirement.split(">")[0].split("[")[0] not in required, requirement
    assert "skiplock[embedded,otel,jwt,http,testing]" in extras["dev"]  # the suite runs all of them


def test_tracing_without_the_otel_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from skiplock import tracing

    monkeypatch.setitem(sys.modules, EXTRAS["otel"], None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs the 'otel' extra: pip install 'skiplock\[otel\]'"):
        tracing.configure(Settings(database_url="postgresql:///x", otel="on"))
    assert tracing.provider() is None


def test_jwt_without_the_jwt_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from skiplock.auth import TokenVerifier

    monkeypatch.setitem(sys.modules, EXTRAS["jwt"], None)
    with pytest.raises(ConfigError, match=r"SKIPLOCK_JWT_SECRET .* pip install 'skiplock\[jwt\]'"):
        TokenVerifier.from_settings(Settings(database_url="postgresql:///x", jwt_secret="s" * 32))


def test_the_embedded_server_without_its_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from skiplock.db import EmbeddedPostgres

    monkeypatch.setitem(sys.modules, EXTRAS["embedded"], None)
    with pytest.raises(ConfigError, match=r"DATABASE_URL is unset\) needs the 'embedded' extra"):
        EmbeddedPostgres(tmp_path / "pg").start()


def test_skiplock_imports_and_builds_its_app_without_any_extra() -> None:
    blocked = ", ".join(repr(name.split(".")[0]) for name in EXTRAS.values())
    script = (
        f"import sys\nfor name in ({blocked}): sys.modules[name] = None\n"
        "import skiplock, skiplock.cli\n"
        "skiplock.create_app(skiplock.Settings(database_url='postgresql:///x'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_http_client_without_the_http_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from skiplock.http import Client

    monkeypatch.setitem(sys.modules, EXTRAS["http"], None)
    with pytest.raises(ConfigError, match=r"skiplock.http.Client needs the 'http' extra: .*skiplock\[http\]"):
        Client("http://127.0.0.1:1")


def test_the_pytest_plugin_is_registered_by_its_entry_point() -> None:
    assert PROJECT["entry-points"]["pytest11"] == {"skiplock": "skiplock.testing.plugin"}
    assert set(PROJECT["optional-dependencies"]["testing"]) >= {"pytest>=8,<10", "pytest-asyncio>=0.24,<2"}
