"""A pool child's side: its context offers the job, progress and log (sent as messages) and says
clearly what it lacks; one request's answer is plain JSON; the declaration is checked."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from pydantic import BaseModel

from skiplock import task
from skiplock.errors import NotInTaskProcess
from skiplock.queue._child import ChildContext, _Channel, run_one
from skiplock.queue.context import JobInfo
from tests.support import process_tasks

JOB = JobInfo(7, "proc_chatty", "default", 2, 3)


class NoArgs(BaseModel):
    pass


async def test_a_childs_context_sends_progress_and_logs_and_refuses_the_engines_tools() -> None:
    sent: list[dict[str, Any]] = []
    ctx = ChildContext(JOB, {}, sent.append)
    await ctx.progress(0.5, "half")
    await ctx.log("hello", level="warning", n=1)
    assert sent == [
        {"type": "event", "kind": "progress", "data": {"fraction": 0.5, "message": "half"}},
        {
            "type": "event",
            "kind": "log",
            "data": {"message": "hello", "level": "warning", "fields": {"n": 1}},
        },
    ]
    assert ctx.job.attempt == 2
    with pytest.raises(NotInTaskProcess, match=r"ctx\.pool"):
        _ = ctx.pool
    with pytest.raises(NotInTaskProcess, match=r"ctx\.http"):
        _ = ctx.http
    with pytest.raises(NotInTaskProcess, match=r"ctx\.enqueue"):
        await ctx.enqueue("noop")
    assert NotInTaskProcess.retryable is False


def answer(request: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = io.BytesIO()
    loop = asyncio.new_event_loop()
    try:
        final = run_one(request, _Channel(out), loop)
    finally:
        loop.close()
    json.dumps(final)  # plain JSON, as it crosses the pipe
    return final, [json.loads(line) for line in out.getvalue().splitlines()]


def request(name: str, args: dict[str, Any], module: str | None = None) -> dict[str, Any]:
    return {"task": name, "module": module, "args": args, "job": [7, name, "default", 1, 3]}


def test_one_request_answers_its_result_after_its_events() -> None:
    final, events = answer(request("proc_chatty", {}))
    assert final["type"] == "result"
    assert [e["data"]["fields"]["step"] for e in events if e["kind"] == "log"] == [1, 2, 3]


def test_a_failure_an_unknown_task_and_bad_args_are_described() -> None:
    failed, _ = answer(request("proc_fails", {}))
    assert failed["type"] == "error"
    assert failed["retryable"] is True
    assert (failed["error"]["type"], failed["error"]["message"]) == ("ValueError", "bad input on attempt 1")
    assert "Traceback" in failed["error"]["traceback"]
    unknown, _ = answer(request("no_such_task", {}, module="tests.support.process_tasks"))
    assert (unknown["error"]["type"], unknown["retryable"]) == ("UnknownTaskError", False)
    bad, _ = answer(request("proc_spin", {"seconds": -1}))
    assert (bad["error"]["type"], bad["retryable"]) == ("InvalidArgumentsError", False)
    assert process_tasks.proc_spin.executor == "process"


def test_the_executor_option_is_checked_where_the_task_is_declared() -> None:
    with pytest.raises(ValueError, match="executor must be"):
        task("bad_executor", args=NoArgs, executor="fork")  # type: ignore[arg-type]

    async def on_the_loop(ctx: Any, args: NoArgs) -> None:
        pass

    with pytest.raises(ValueError, match="plain def"):
        task("async_on_threads", args=NoArgs, executor="thread")(on_the_loop)
