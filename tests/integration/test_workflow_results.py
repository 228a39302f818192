"""Waiting for a workflow's result: Client.wait_for_workflow and GET /workflows/{id}/result?wait=S,
answered from the 'wf:<id>' notification the transaction ending its last step sends (one read a
round, no connection held while waiting)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from litestar.testing import AsyncTestClient

from skiplock.errors import ResultTimeout, WorkflowFailed, WorkflowNotFound
from skiplock.queue import Engine
from skiplock.queue.models import JobState
from skiplock.queue.workflows import Step, chain, chord, group
from tests.integration.test_results import _POOL_CONNECTIONS, ANSWER_WITHIN_MS, WAIT_ADDS_MS, _spread
from tests.support.serving import served
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

Client = AsyncTestClient[Any]


def echo(name: str = "", **args: Any) -> Step:
    return Step(name=name, task="echo", args=args)


def sleeping(name: str, seconds: float) -> Step:
    return Step(
        name=name, task="sleep", args={"seconds": seconds, "steps": min(1000, max(1, int(seconds * 10)))}
    )


async def test_wait_for_workflow_returns_the_last_steps_results_by_name(engine: Engine) -> None:
    flow = chord(group(echo(i=1), echo(i=2)), echo("total"))
    started = await engine.client.start(flow)
    result = await engine.client.wait_for_workflow(started.id, timeout_s=15)
    assert list(result) == ["total"]
    assert [v["args"]["i"] for v in result["total"]["upstream"].values()] == [1, 2]
    assert result == await engine.client.workflow_result(started.id)
    assert engine.results.waiting == 0


async def test_wait_for_workflow_raises_workflow_failed_naming_the_failed_step(engine: Engine) -> None:
    flow = chain(echo("first"), Step("breaks", "fails_permanently"), echo("after"))
    started = await engine.client.start(flow)
    with pytest.raises(WorkflowFailed) as raised:
        await engine.client.wait_for_workflow(started.id, timeout_s=15)
    failed = raised.value
    assert failed.workflow_id == started.id
    assert failed.state == "failed"
    assert not failed.retryable
    assert failed.error is not None
    assert (failed.error.step, failed.error.state) == ("breaks", JobState.FAILED)
    assert failed.error.error is not None
    assert failed.error.error.type == "PermanentJobError"
    assert "step 'breaks' failed" in str(failed)
    # the last step never ran: cancelled, its error the upstream's failure
    assert failed.result["after"]["state"] == "cancelled"
    assert failed.result["after"]["error"]["type"] == "UpstreamFailed"


async def test_wait_for_workflow_times_out_with_its_state(engine: Engine) -> None:
    started = await engine.client.start(chain(sleeping("long", 30), echo("then")))
    began = time.monotonic()
    with pytest.raises(ResultTimeout) as raised:
        await engine.client.wait_for_workflow(started.id, timeout_s=0.3)
    assert 0.25 <= time.monotonic() - began < 3
    assert isinstance(raised.value, TimeoutError)
    assert (raised.value.workflow_id, raised.value.job_id, raised.value.state) == (
        started.id,
        None,
        "running",
    )
    assert engine.results.waiting == 0
    with pytest.raises(WorkflowNotFound):
        await engine.client.wait_for_workflow(987654321, timeout_s=1)
    with pytest.raises(WorkflowNotFound):
        await engine.client.wait_for_workflow(987654321, timeout_s=0)


async def test_a_cancel_ends_the_wait_once_its_running_step_has_stopped(engine: Engine) -> None:
    started = await engine.client.start(chain(sleeping("long", 30), echo("then")))
    waiting = asyncio.ensure_future(engine.results.wait_workflow(started.id, 30))
    await wait_until(lambda: engine.results.waiting == 1 and engine.results.reads >= 1, 5)
    first = (started.steps or [])[0].job_id

    async def running() -> bool:
        return (await engine.client.get(first)).state == JobState.RUNNING

    await wait_until(running, 10)
    await engine.client.cancel_workflow(started.id)
    outcome = await asyncio.wait_for(waiting, 10)
    assert (outcome.final, outcome.state) == (True, "cancelled")
    assert outcome.error is not None
    assert outcome.error.step == "long"
    assert outcome.result is not None
    assert outcome.result["then"]["state"] == "cancelled"


async def test_a_finish_missed_during_a_listener_reconnect_is_read_after_it(
    engine: Engine, db: asyncpg.Connection
) -> None:
    started = await engine.client.start(chain(sleeping("long", 3600), echo("then")))
    waiting = asyncio.ensure_future(engine.client.wait_for_workflow(started.id, timeout_s=30))
    await wait_until(lambda: engine.results.waiting == 1 and engine.results.reads >= 1, 5)
    async with db.transaction():  # finished with no trigger and no notification: as if lost
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(
            "UPDATE workflows SET state = 'succeeded', succeeded = steps, finished_at = now() WHERE id = $1",
            started.id,
        )
        await db.execute(
            "UPDATE jobs SET state = 'succeeded', result = '{\"quiet\": true}', finished_at = now()"
            " WHERE workflow_id = $1",
            started.id,
        )
    await asyncio.sleep(0.3)
    assert not waiting.done()
    reconnects = engine.listener.signals.reconnects
    await db.execute("SELECT pg_terminate_backend($1)", engine.listener.connection_pid)
    await wait_until(lambda: engine.listener.signals.reconnects > reconnects, 10)
    assert await asyncio.wait_for(waiting, 10) == {"then": {"quiet": True}}


async def test_result_route_answers_200_with_the_leaves_once_final(api: Client) -> None:
    body = {
        "steps": [
            {"name": "fetch", "task": "echo", "args": {"n": 1}},
            {"name": "small", "task": "echo", "after": ["fetch"]},
            {"name": "large", "task": "echo", "after": ["fetch"]},
        ]
    }
    started = (await api.post("/workflows", json=body)).json()
    response = await api.get(f"/workflows/{started['id']}/result", params={"wait": "15"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["state"] == "succeeded"
    assert answer["error"] is None
    assert list(answer["result"]) == ["small", "large"]  # the steps nothing depends on, in order
    assert answer["result"]["small"]["upstream"]["fetch"]["args"] == {"n": 1}


async def test_result_route_of_a_failed_workflow_names_its_step(api: Client) -> None:
    body = {"steps": [{"name": "boom", "task": "fails_permanently"}, {"name": "ok", "task": "echo"}]}
    started = (await api.post("/workflows", json=body)).json()
    response = await api.get(f"/workflows/{started['id']}/result", params={"wait": "15"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["state"] == "failed"
    assert answer["error"]["step"] == "boom"
    assert answer["error"]["state"] == "failed"
    assert answer["error"]["error"]["type"] == "PermanentJobError"
    assert answer["result"]["boom"]["state"] == "failed"
    assert answer["result"]["ok"] == {"args": {}, "upstream": {}}


async def test_result_route_answers_202_with_the_current_state_after_the_wait(api: Client) -> None:
    body = {"steps": [{"name": "long", "task": "sleep", "args": {"seconds": 30, "steps": 300}}]}
    started = (await api.post("/workflows", json=body)).json()
    began = time.monotonic()
    response = await api.get(f"/workflows/{started['id']}/result", params={"wait": "0.3"})
    assert 0.25 <= time.monotonic() - began < 3
    assert response.status_code == 202, response.text
    assert response.json() == {"state": "running", "result": None, "error": None}
    at_once = await api.get(f"/workflows/{started['id']}/result")  # wait defaults to 0
    assert (at_once.status_code, at_once.json()["state"]) == (202, "running")


async def test_result_route_of_an_unknown_workflow_is_a_404(api: Client) -> None:
    for wait in ("0", "1"):
        response = await api.get("/workflows/987654321/result", params={"wait": wait})
        assert response.status_code == 404, response.text
        assert "987654321" in response.json()["detail"]
    assert (await api.get("/workflows/abc/result")).status_code == 400


@pytest.mark.parametrize("wait", ["-1", "60.5", "61", "abc", "nan", "inf", "1e9", "x" * 100])
async def test_result_route_refuses_a_bad_wait_with_a_422(api: Client, wait: str) -> None:
    response = await api.get("/workflows/1/result", params={"wait": wait})
    assert response.status_code == 422, response.text
    assert "wait" in response.json()["detail"]
    assert response.json()["extra"]["errors"][0]["field"] == "wait"


async def test_the_workflow_routes_and_their_answers_are_in_the_openapi_schema(api: Client) -> None:
    paths = (await api.get("/schema/openapi.json")).json()["paths"]
    result = paths["/workflows/{workflow_id}/result"]["get"]
    assert result["operationId"] == "GetWorkflowResult"
    assert {"200", "202", "404", "422"} <= set(result["responses"])
    assert "notifications" in result["description"]
    assert any(p["name"] == "wait" for p in result["parameters"])
    for path in ("/workflows/{workflow_id}/cancel", "/workflows/{workflow_id}/retry"):
        assert {"202", "404", "409"} <= set(paths[path]["post"]["responses"]), path


async def test_50_workflow_long_polls_hold_no_connection_and_answer_within_50_ms(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """50 clients wait on ``/workflows/{id}/result?wait=30`` of a real API-only ``skiplock serve``;
    the workflow's steps are run by a worker process started once they all wait. While they wait
    the server's pool has no more connections open than its minimum; each answer is timed from
    when this test's own LISTEN connection is told 'wf:<id>' (the workflow final, committed)."""
    settings = {"WORKER": "false", "SCHEDULER": "false", "POOL_MIN_SIZE": "2", "POOL_MAX_SIZE": "10"}
    async with served(dsn, tmp_path, **settings) as app:
        body = {"steps": [{"name": "a", "task": "noop"}, {"name": "b", "task": "noop", "after": ["a"]}]}
        created = (await app.http.post("/workflows", json=body)).json()
        url = f"{app.url}/workflows/{created['id']}/result"
        told: dict[str, float] = {}

        def heard(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            told.setdefault(str(payload), time.time())

        await db.add_listener("skiplock", heard)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def wait_for_it() -> tuple[int, dict[str, Any], float]:
                async with session.get(url, params={"wait": "30"}) as response:
                    answer = await response.read()
                    return response.status, orjson.loads(answer), time.time()

            waits = [asyncio.ensure_future(wait_for_it()) for _ in range(50)]
            try:

                async def all_waiting() -> bool:
                    return await app.metric("skiplock_result_waiters") == 50

                await wait_until(all_waiting, 30, 0.1)
                samples = []
                for _ in range(20):
                    sample = await db.fetchrow(_POOL_CONNECTIONS)
                    assert sample is not None
                    samples.append((sample["open"], sample["in_use"]))
                    await asyncio.sleep(0.05)
                worker = start_worker(dsn)
                try:
                    answers = await asyncio.wait_for(asyncio.gather(*waits), 60)
                finally:
                    await asyncio.to_thread(stop_worker, worker)
            finally:
                for wait in waits:
                    wait.cancel()

            async def health() -> float:
                async with session.get(f"{app.url}/health") as response:
                    await response.read()
                    return time.time()

            began = time.time()
            health_ms = (max(await asyncio.gather(*(health() for _ in range(50)))) - began) * 1000
    final_at = told[f"wf:{created['id']}"]
    late_ms = sorted((at - final_at) * 1000 for _, _, at in answers)
    print(
        f"\n50 workflow long polls: pool connections open while waiting (min 2) "
        f"{sorted({s[0] for s in samples})}, in use {sorted({s[1] for s in samples})}\n"
        f"answers after the 'wf:' notification, ms: {_spread(late_ms)}\n"
        f"the same server answering 50 GET /health at once: last after {health_ms:.1f} ms"
    )
    assert {(status, answer["state"]) for status, answer, _ in answers} == {(200, "succeeded")}
    assert all(list(answer["result"]) == ["b"] for _, answer, _ in answers)
    assert max(open_ for open_, _ in samples) <= 2, samples
    assert max(in_use for _, in_use in samples) <= 1, samples
    assert late_ms[-1] <= max(ANSWER_WITHIN_MS, health_ms + WAIT_ADDS_MS), (late_ms, health_ms)
