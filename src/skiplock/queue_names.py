"""The one rule for queue names, wherever a name enters: the API, SKIPLOCK_QUEUES and ``@task``.

No ``:`` (SKIPLOCK_QUEUES writes ``name:limit``), nothing a URL path or a Prometheus label would
need to escape, and the jobs table's length limit.
"""

from __future__ import annotations

import re

QUEUE_NAME = r"^[A-Za-z0-9_.-]{1,100}$"
_QUEUE_NAME = re.compile(QUEUE_NAME)


def check_queue_name(name: str) -> str:
    """``name`` if it is a valid queue name; ValueError saying what a name may hold otherwise."""
    if not _QUEUE_NAME.fullmatch(name):
        raise ValueError(f"bad queue name {name[:120]!r}: 1 to 100 letters, digits, '_', '.' or '-'")
    return name
