"""A task whose lines go through the standard library, as a user's libraries log: a logger of its
own and asyncio's (the loop's exception handler)."""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel

from skiplock import Context, task

log = logging.getLogger("tests.stdlib")


class Words(BaseModel):
    text: str


@task("stdlib_logs", args=Words)
async def stdlib_logs(ctx: Context, args: Words) -> None:
    log.warning("a library says %s", args.text)
    asyncio.get_running_loop().call_exception_handler({"message": f"asyncio says {args.text}"})
