"""The README's example test of a user's own task (``# tests/test_thumbnails.py``) run with pytest as
written, in a project of its own beside the README's ``myapp/``: the plugin's fixtures as a user's
suite gets them (its entry point, or ``-p`` on an install made before it existed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.support.readme import README, readme_files

SRC = Path(__file__).resolve().parents[2] / "src"


def readme_test() -> str:
    blocks = re.findall(r"```python\n(# tests/test_thumbnails\.py\n.*?)```", README.read_text("utf-8"), re.S)
    assert len(blocks) == 1, "the README has one '# tests/test_thumbnails.py' block"
    return str(blocks[0])


def user_project(directory: Path) -> None:
    (directory / "myapp").mkdir()
    (directory / "myapp" / "__init__.py").write_text("")
    for path, code in readme_files().items():
        (directory / path).write_text(code, encoding="utf-8")
    (directory / "tests").mkdir()
    (directory / "tests" / "test_thumbnails.py").write_text(readme_test(), encoding="utf-8")
    (directory / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nasyncio_mode = "auto"\nasyncio_default_fixture_loop_scope = "function"\n'
    )


def run_pytest(directory: Path, admin_dsn: str) -> subprocess.CompletedProcess[str]:
    # Only the plugins the example needs (the dev install's others take seconds to load): by their
    # entry points' names, or the module on an install made before skiplock's entry point existed.
    installed = any(e.name == "skiplock" for e in entry_points(group="pytest11"))
    plugin = "skiplock" if installed else "skiplock.testing.plugin"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
    argv += ["-p", "asyncio", "-p", plugin]
    env = {
        **os.environ,
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), str(directory)]),
        "SKIPLOCK_TEST_DATABASE_URL": admin_dsn,
    }
    return subprocess.run(
        argv, cwd=directory, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
def test_the_readmes_example_test_passes_as_written(tmp_path: Path, pg_admin_dsn: str) -> None:
    user_project(tmp_path)
    done = run_pytest(tmp_path, pg_admin_dsn)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
