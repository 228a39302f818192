"""The README's Python examples as the files they say they are (``# myapp/jobs.py`` on their first
line), importable as the package ``myapp`` from a directory of the test's own."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from skiplock.queue import registered

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_files() -> dict[str, str]:
    """Path → code of each ``python`` block whose first line names its file under ``myapp/``."""
    files: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        named = re.match(r"# (myapp/\w+\.py)\n", block)
        if named:
            assert named.group(1) not in files, f"two README blocks are {named.group(1)}"
            files[named.group(1)] = block
    return files


@contextmanager
def readme_package(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """Write every README file under ``directory/myapp`` and yield their modules, imported on first
    use (``modules["jobs"]``); afterwards the modules and the tasks their ``@task`` lines
    registered are gone."""
    (directory / "myapp").mkdir()
    (directory / "myapp" / "__init__.py").write_text("")
    for path, code in readme_files().items():
        (directory / path).write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(directory))
    before = set(registered._tasks)

    class Modules(dict[str, ModuleType]):
        def __missing__(self, name: str) -> ModuleType:
            self[name] = importlib.import_module(f"myapp.{name}")
            return self[name]

    try:
        yield Modules()
    finally:
        for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
            del sys.modules[name]
        for name in set(registered._tasks) - before:
            del registered._tasks[name]
