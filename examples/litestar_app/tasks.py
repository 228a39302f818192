"""The example's task."""

from __future__ import annotations

from pydantic import BaseModel, Field

from skiplock import Context, task


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=100)


@task("greet", args=Greeting)
async def greet(ctx: Context, args: Greeting) -> str:
    await ctx.progress(1.0, "written")
    return f"Hello, {args.name}!"
