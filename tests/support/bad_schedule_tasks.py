"""A task module whose declared schedule can never fire: importing it is a start-up error.

Only worker subprocesses import it (SKIPLOCK_TASK_MODULES), never the test process."""

from __future__ import annotations

from pydantic import BaseModel

from skiplock import Context, task


class NoArgs(BaseModel):
    pass


@task("leap_report", args=NoArgs, schedule="0 0 30 2 *")
async def leap_report(ctx: Context, args: NoArgs) -> None:
    """Would run on 30 February."""
