"""The echo task: returns what it was given and what its workflow's dependencies returned.

For examples, demos and tests of workflows: ``{"args": …, "upstream": {step: result, …}}``.
``fail`` makes it fail for good instead (a failed dependency appears in a dependent's upstream as
``{"state": …, "error": …}`` under ``on_failure="continue"``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from skiplock.errors import PermanentJobError
from skiplock.queue.context import Context
from skiplock.queue.tasks import task
from skiplock.queue.workflows import UpstreamFailure


class EchoArgs(BaseModel):
    """Any fields; each is returned as given."""

    model_config = ConfigDict(extra="allow")

    fail: bool = Field(default=False, description="Fail for good instead of answering.")


@task("echo", args=EchoArgs)
async def echo(ctx: Context, args: EchoArgs) -> dict[str, Any]:
    """Return ``{"args": args, "upstream": ctx.upstream}``."""
    if args.fail:
        raise PermanentJobError("echo failed on purpose")
    upstream = {k: v.as_json() if isinstance(v, UpstreamFailure) else v for k, v in ctx.upstream.items()}
    return {"args": args.model_dump(mode="json", exclude_defaults=True), "upstream": upstream}
