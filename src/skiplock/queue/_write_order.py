"""A run's progress and log events commit before its outcome, never after it.

An event row is written only while its job is running at its attempt under this process (the
guard in event_write_many), so events committed after their run's outcome would be refused and
lost. The event writer and the completer each write on their own, in turns (``turn``, held
around every write of either, one at a time):

- the event writer takes a run's due events inside its turn, and commits them there: the run had
  not finished when they were taken (the executor moves a finishing run's last events into its
  outcome and drops the run from the running jobs at once), so its outcome's write comes in a
  later turn;
- events it could not write go, still inside its turn, back to their run or, if the run finished
  meanwhile, to its pending outcome (``to_outcome``), which the completer writes first, in the
  same transaction as the outcome.

Holding the turn costs no round trip: it only orders writes that each make their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from skiplock.queue._running import PendingEvent

#: (job id, attempt, events) → True when they were given to that run's pending outcome.
ToOutcome = Callable[[int, int, list[PendingEvent]], bool]


def _no_outcome(job_id: int, attempt: int, events: list[PendingEvent]) -> bool:
    return False


class EventsBeforeOutcomes:
    """Shared by one process's event writer and completer (see the module docstring)."""

    def __init__(self) -> None:
        #: Held around every write of either; the event writer takes it before taking events.
        self.turn = asyncio.Lock()
        #: Set by the completer: hands events of a finished run to its pending outcome.
        self.to_outcome: ToOutcome = _no_outcome
