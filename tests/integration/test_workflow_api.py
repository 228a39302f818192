"""/workflows through the real app and engine: start, read, list, cancel, retry, and every refusal
a 422 naming the step and field with nothing written."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import make_settings
from tests.integration.test_api import assert_error
from tests.integration.test_events import read_ws, ws_url
from tests.support.live import live_server
from tests.support.waiting import wait_until

Client = AsyncTestClient[Any]


async def ended(api: Client, workflow_id: int) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/workflows/{workflow_id}")).json()
        return body if body["state"] != "running" and body["finished_at"] else None

    found: dict[str, Any] = await wait_until(final, 15)
    return found


async def test_a_diamond_over_http_runs_and_reads_back_with_its_edges(api: Client) -> None:
    body = {
        "name": "thumbnails",
        "steps": [
            {"name": "fetch", "task": "echo", "args": {"url": "http://x"}},
            {"name": "small", "task": "echo", "after": ["fetch"]},
            {"name": "large", "task": "echo", "after": ["fetch"], "priority": 5},
            {"name": "publish", "task": "echo", "after": ["small", "large"]},
        ],
    }
    response = await api.post("/workflows", json=body)
    assert response.status_code == 201, response.text
    started = response.json()
    assert started["name"] == "thumbnails"
    assert started["on_failure"] == "cancel"
    assert started["steps_total"] == 4
    steps = {s["name"]: s for s in started["steps"]}
    assert steps["fetch"]["state"] == "queued"
    assert steps["publish"]["after"] == ["small", "large"]
    done = await ended(api, started["id"])
    assert done["state"] == "succeeded"
    assert done["progress"] == 1.0
    publish = (await api.get(f"/jobs/{steps['publish']['job_id']}")).json()
    assert publish["workflow_id"] == started["id"]
    assert publish["step"] == "publish"
    assert set(publish["result"]["upstream"]) == {"small", "large"}  # jsonb keeps no key order
    assert publish["result"]["upstream"]["small"]["upstream"]["fetch"]["args"] == {"url": "http://x"}

    page = (await api.get("/workflows?state=succeeded")).json()
    assert [w["id"] for w in page["items"]] == [started["id"]]
    assert page["items"][0]["steps"] is None
    assert (await api.get("/workflows?state=running")).json()["items"] == []


async def test_cancel_and_retry_over_http(api: Client, db: asyncpg.Connection) -> None:
    body = {
        "steps": [
            {"name": "wait", "task": "sleep", "args": {"seconds": 30, "steps": 300}},
            {"name": "then", "task": "echo", "after": ["wait"]},
        ]
    }
    started = (await api.post("/workflows", json=body)).json()
    wid = started["id"]
    assert_error(await api.post(f"/workflows/{wid}/retry"), 409, "running")
    cancelled = await api.post(f"/workflows/{wid}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    done = await ended(api, wid)
    assert {s["name"]: s["state"] for s in done["steps"]} == {"wait": "cancelled", "then": "cancelled"}
    assert_error(await api.post(f"/workflows/{wid}/cancel"), 409, "finished")
    await db.execute(
        "UPDATE jobs SET args = '{\"seconds\": 0}' WHERE workflow_id = $1 AND step = 'wait'", wid
    )
    retried = await api.post(f"/workflows/{wid}/retry")
    assert retried.status_code == 202, retried.text
    assert (await ended(api, wid))["state"] == "succeeded"


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        (
            [
                {"name": "a", "task": "echo", "after": ["c"]},
                {"name": "b", "task": "echo", "after": ["a"]},
                {"name": "c", "task": "echo", "after": ["b"]},
            ],
            ["cycle", "a -> c -> b -> a"],
        ),
        ([{"name": "a", "task": "echo", "after": ["ghost"]}], ["step 'a'", "ghost"]),
        ([{"name": "a", "task": "echo"}, {"name": "a", "task": "echo"}], ["'a' is named twice"]),
        ([{"name": "a", "task": "nope"}], ["step 'a'", "nope"]),
        ([{"name": "a", "task": "sleep", "args": {"seconds": "soon"}}], ["step 'a'", "seconds"]),
        ([{"name": "a", "task": "echo", "priority": 1000}], ["step 'a'", "priority"]),
        ([{"name": "bad name", "task": "echo"}], ["step 'bad name'", "name"]),
        ([{"name": "a", "task": "echo", "surprise": 1}], ["step 'a'", "surprise"]),
        ([], ["steps"]),
        ("not a list", ["steps"]),
    ],
)
async def test_a_bad_workflow_is_a_422_naming_the_problem_and_writes_nothing(
    api: Client, db: asyncpg.Connection, steps: Any, words: list[str]
) -> None:
    assert_error(await api.post("/workflows", json={"steps": steps}), 422, *words)
    assert await db.fetchval("SELECT count(*) FROM workflows") == 0
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_ten_thousand_and_one_steps_is_a_422(api: Client, db: asyncpg.Connection) -> None:
    steps = [{"name": f"s{i}", "task": "noop"} for i in range(10_001)]
    assert_error(await api.post("/workflows", json={"steps": steps}), 422, "at most 10000")
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize(("path", "status"), [("/workflows/999", 404), ("/workflows/abc", 400)])
async def test_an_unknown_or_bad_workflow_id(api: Client, path: str, status: int) -> None:
    assert_error(await api.get(path), status)
    if status == 404:
        assert_error(await api.post(f"{path}/cancel"), 404)
        assert_error(await api.post(f"{path}/retry"), 404)


async def test_jobs_can_be_listed_by_workflow(api: Client) -> None:
    def two_steps(tag: str) -> dict[str, Any]:
        return {
            "steps": [
                {"name": f"{tag}-a", "task": "echo"},
                {"name": f"{tag}-b", "task": "echo", "after": [f"{tag}-a"]},
            ]
        }

    first = (await api.post("/workflows", json=two_steps("one"))).json()
    second = (await api.post("/workflows", json=two_steps("two"))).json()
    await api.post("/jobs", json={"task": "noop"})  # a job of no workflow
    await ended(api, first["id"])
    await ended(api, second["id"])
    page = (await api.get("/jobs", params={"workflow_id": first["id"]})).json()
    assert [j["step"] for j in page["items"]] == ["one-b", "one-a"]  # newest first
    assert {j["workflow_id"] for j in page["items"]} == {first["id"]}
    ids = [s["job_id"] for s in first["steps"]]
    assert [j["id"] for j in page["items"]] == sorted(ids, reverse=True)
    paged = (await api.get("/jobs", params={"workflow_id": first["id"], "limit": 1})).json()
    assert [j["step"] for j in paged["items"]] == ["one-b"]
    rest = await api.get(
        "/jobs", params={"workflow_id": first["id"], "limit": 1, "cursor": paged["next_cursor"]}
    )
    assert [j["step"] for j in rest.json()["items"]] == ["one-a"]
    assert (await api.get("/jobs", params={"workflow_id": first["id"], "state": "failed"})).json()[
        "items"
    ] == []
    assert (await api.get("/jobs", params={"workflow_id": 987654})).json()["items"] == []
    assert len((await api.get("/jobs")).json()["items"]) == 5  # no filter: every job
    assert (await api.get("/jobs", params={"workflow_id": 0})).status_code == 400


@pytest.mark.parametrize("on_failure", ["cancel", "continue"])
async def test_cancelling_a_waiting_step_cancels_or_lets_go_what_depends_on_it(
    api: Client, db: asyncpg.Connection, on_failure: str
) -> None:
    body = {
        "on_failure": on_failure,
        "steps": [
            {"name": "gate", "task": "sleep", "args": {"seconds": 1, "steps": 10}},
            {"name": "middle", "task": "echo", "after": ["gate"]},
            {"name": "last", "task": "echo", "after": ["middle"]},
        ],
    }
    started = (await api.post("/workflows", json=body)).json()
    steps = {s["name"]: s["job_id"] for s in started["steps"]}
    cancelled = await api.post(f"/jobs/{steps['middle']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    event = await db.fetchrow(
        "SELECT data FROM job_events WHERE job_id = $1 AND data->>'state' = 'cancelled'", steps["middle"]
    )
    assert event is not None
    assert event["data"]["previous"] == "waiting"
    done = await ended(api, started["id"])
    states = {s["name"]: s["state"] for s in done["steps"]}
    assert done["state"] == "failed"
    assert (done["succeeded"], done["cancelled"]) == ((1, 2) if on_failure == "cancel" else (2, 1))
    if on_failure == "cancel":
        assert states == {"gate": "succeeded", "middle": "cancelled", "last": "cancelled"}
        last = (await api.get(f"/jobs/{steps['last']}")).json()
        assert last["errors"][-1]["type"] == "UpstreamFailed"
        assert "middle" in last["errors"][-1]["message"]
    else:
        assert states == {"gate": "succeeded", "middle": "cancelled", "last": "succeeded"}
        last = (await api.get(f"/jobs/{steps['last']}")).json()
        assert last["result"]["upstream"]["middle"]["state"] == "cancelled"
    assert_error(await api.post(f"/jobs/{steps['middle']}/cancel"), 409, "finished")


async def test_a_cancelled_queued_job_still_says_it_left_queued(api: Client, db: asyncpg.Connection) -> None:
    later = (await api.post("/jobs", json={"task": "noop", "delay_s": 3600})).json()
    assert (await api.post(f"/jobs/{later['id']}/cancel")).json()["state"] == "cancelled"
    previous = await db.fetchval(
        "SELECT data->>'previous' FROM job_events WHERE job_id = $1 AND data->>'state' = 'cancelled'",
        later["id"],
    )
    assert previous == "queued"


async def test_retrying_a_step_alone_is_a_409_saying_to_retry_the_workflow(
    api: Client, db: asyncpg.Connection
) -> None:
    body = {
        "steps": [
            {"name": "boom", "task": "fails_permanently"},
            {"name": "then", "task": "echo", "after": ["boom"]},
        ]
    }
    started = (await api.post("/workflows", json=body)).json()
    done = await ended(api, started["id"])
    assert done["state"] == "failed"
    for step in done["steps"]:  # failed, and cancelled below it: neither may be retried alone
        response = await api.post(f"/jobs/{step['job_id']}/retry")
        assert_error(response, 409, f"workflow {started['id']}", f"/workflows/{started['id']}/retry")
        assert response.json()["extra"]["workflow_id"] == started["id"]
        assert response.json()["extra"]["step"] == step["name"]
    row = await db.fetchrow("SELECT failed, cancelled, state FROM workflows WHERE id = $1", started["id"])
    assert row is not None
    assert dict(row) == {"failed": 1, "cancelled": 1, "state": "failed"}  # counts untouched
    # a job of no workflow is retried as ever
    plain = (await api.post("/jobs", json={"task": "fails_permanently"})).json()

    async def failed() -> bool:
        return bool((await api.get(f"/jobs/{plain['id']}")).json()["state"] == "failed")

    await wait_until(failed, 15)
    assert (await api.post(f"/jobs/{plain['id']}/retry")).status_code == 202


async def test_the_events_socket_streams_every_event_of_one_workflows_steps(dsn: str, registry: Any) -> None:
    def diamond(tag: str) -> dict[str, Any]:
        gated = {"queue": "gated"}
        return {
            "name": tag,
            "steps": [
                {"name": "top", "task": "echo", **gated},
                {
                    "name": "left",
                    "task": "chatty",
                    "args": {"lines": 2, "size": 10},
                    "after": ["top"],
                    **gated,
                },
                {"name": "right", "task": "echo", "after": ["top"], **gated},
                {"name": "bottom", "task": "echo", "after": ["left", "right"], **gated},
            ],
        }

    two_queues = make_settings(dsn, queues=["default", "gated"])
    async with live_server(two_queues, list(registry)) as base, aiohttp.ClientSession() as http:

        async def start(tag: str) -> dict[str, Any]:
            async with http.post(f"{base}/workflows", json=diamond(tag)) as response:
                assert response.status == 201, await response.text()
                started: dict[str, Any] = await response.json()
                return started

        async def final(workflow_id: int) -> bool:
            async with http.get(f"{base}/workflows/{workflow_id}") as response:
                return bool((await response.json())["finished_at"])

        async with http.post(f"{base}/queues/gated/pause") as paused:
            assert paused.status == 200, await paused.text()
        wanted, noise = await start("wanted"), await start("noise")
        ids = {s["job_id"] for s in wanted["steps"]}
        events: list[dict[str, Any]] = []
        async with http.ws_connect(ws_url(base, f"/ws/events?workflow_id={wanted['id']}")) as ws:
            snapshot = (await read_ws(ws, limit=1))[0]
            async with http.post(f"{base}/queues/gated/resume") as resumed:
                assert resumed.status == 200, await resumed.text()
            finals: set[int] = set()
            async with asyncio.timeout(20):
                while not ids <= finals:
                    (event,) = await read_ws(ws, limit=1)
                    events.append(event)
                    if event["kind"] == "state" and event["data"]["state"] in (
                        "succeeded",
                        "failed",
                        "cancelled",
                    ):
                        finals.add(event["job_id"])
        await wait_until(lambda: final(noise["id"]), 15)
        async with http.get(f"{base}/jobs", params={"workflow_id": noise["id"]}) as response:
            noise_steps = (await response.json())["items"]
        async with http.ws_connect(ws_url(base, "/ws/events?workflow_id=987654321")) as ws:
            await read_ws(ws)
            unknown = ws.close_code
        async with http.ws_connect(ws_url(base, "/ws/events?workflow_id=abc")) as ws:
            await read_ws(ws)
            bad_filter = ws.close_code
    assert snapshot["kind"] == "snapshot"
    assert snapshot["workflow"]["id"] == wanted["id"]
    assert {s["job_id"] for s in snapshot["workflow"]["steps"]} == ids
    assert {e["job_id"] for e in events} == ids, "an event of another workflow's step"
    by_job: dict[int, list[str]] = {}
    for event in events:
        if event["kind"] == "state":
            by_job.setdefault(event["job_id"], []).append(event["data"]["state"])
    step_of = {s["job_id"]: s["name"] for s in wanted["steps"]}
    for job_id in ids:  # every step's moves, in order (top was queued before the socket opened)
        expected = (
            ["running", "succeeded"] if step_of[job_id] == "top" else ["queued", "running", "succeeded"]
        )
        assert by_job[job_id] == expected, (step_of[job_id], by_job)
    left = next(s["job_id"] for s in wanted["steps"] if s["name"] == "left")
    assert sum(1 for e in events if e["job_id"] == left and e["kind"] == "log") == 2
    assert len(noise_steps) == 4
    assert all(s["state"] == "succeeded" for s in noise_steps), "the other workflow ran meanwhile"
    assert unknown == 4404
    assert bad_filter == 4400


async def test_the_job_routes_document_steps_and_their_answers(api: Client) -> None:
    paths = (await api.get("/schema/openapi.json")).json()["paths"]
    cancel = paths["/jobs/{job_id}/cancel"]["post"]
    assert {"202", "404", "409"} <= set(cancel["responses"])
    assert "waiting" in cancel["description"]
    retry = paths["/jobs/{job_id}/retry"]["post"]
    assert {"202", "404", "409"} <= set(retry["responses"])
    assert "workflow" in retry["description"]
    assert any(p["name"] == "workflow_id" for p in paths["/jobs"]["get"]["parameters"])
