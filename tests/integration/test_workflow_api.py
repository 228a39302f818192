"""/workflows through the real app and engine: start, read, list, cancel, retry, and every refusal
a 422 naming the step and field with nothing written."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from tests.integration.test_api import assert_error
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
