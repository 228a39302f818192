"""Built-in tasks; importing this package registers them."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

from skiplock.errors import ConfigError
from skiplock.queue.tasks import Task, TaskRegistry, registered
from skiplock.tasks.bulk import bulk_jobs
from skiplock.tasks.echo import EchoArgs, echo
from skiplock.tasks.fetch_api import FetchApiArgs, fetch_api
from skiplock.tasks.import_csv import ImportArgs, import_csv
from skiplock.tasks.scrape import ScrapeArgs, scrape
from skiplock.tasks.sleep import SleepArgs, sleep

BUILTINS: tuple[Task[Any], ...] = (bulk_jobs, echo, fetch_api, import_csv, scrape, sleep)

__all__ = [
    "BUILTINS",
    "EchoArgs",
    "FetchApiArgs",
    "ImportArgs",
    "ScrapeArgs",
    "SleepArgs",
    "bulk_jobs",
    "echo",
    "fetch_api",
    "import_csv",
    "load_registry",
    "scrape",
    "sleep",
]


def load_registry(modules: Iterable[str] = (), tasks: Iterable[Task[Any]] | None = None) -> TaskRegistry:
    """The tasks a process runs: built-ins plus ``tasks`` if given, else every ``@task`` declared
    so far after importing ``modules`` (SKIPLOCK_TASK_MODULES)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            where = _where(module, exc)
            raise ConfigError(f"SKIPLOCK_TASK_MODULES: cannot import {module!r}: {exc}{where}") from exc
    if tasks is None:
        return TaskRegistry(registered)
    return TaskRegistry([*BUILTINS, *tasks])


def _where(module: str, exc: ImportError) -> str:
    """Where a package that was not found was looked for, and what to set (nothing for a module
    missing inside a package that was found, or for a module the task module imports)."""
    top = module.split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or exc.name != top:
        return ""
    cwd = os.getcwd()
    places = "PYTHONPATH and the installed packages"
    if cwd in sys.path or "" in sys.path:
        places = f"the working directory ({cwd}), {places}"
    return (
        f"; looked in {places}: run skiplock from the directory that holds {top!r},"
        f" or add that directory to PYTHONPATH"
    )
