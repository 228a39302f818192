"""Every endpoint through the real app and engine: success and each 4xx, never a 500 from input."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest
import structlog
from litestar.testing import AsyncTestClient

from skiplock import JobState
from skiplock.logging import configure_logging
from tests.factories import job
from tests.support.waiting import wait_until

Client = AsyncTestClient[Any]


async def wait_for_state(api: Client, job_id: int, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/jobs/{job_id}")).json()
        return body if body["state"] == state else None

    result: dict[str, Any] = await wait_until(reached, 10)
    return result


def assert_error(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status_code"] == status
    for word in words:
        assert word in response.text, f"{word!r} not in {response.text}"
    return body


async def test_enqueue_read_and_finish_a_sleep_job(api: Client) -> None:
    response = await api.post("/jobs", json={"task": "sleep", "args": {"seconds": 0.1, "steps": 2}})
    assert response.status_code == 201
    created = response.json()
    assert created["state"] == "queued"
    assert created["args"] == {
        "seconds": 0.1,
        "steps": 2,
        "fail": False,
    }
    assert "x-request-id" in response.headers
    done = await wait_for_state(api, created["id"], "succeeded")
    assert done["result"] == {"slept": 0.1}
    assert set(done) >= {
        "id",
        "task",
        "queue",
        "state",
        "priority",
        "args",
        "attempts",
        "max_attempts",
        "run_at",
        "created_at",
        "started_at",
        "finished_at",
        "progress",
        "result",
        "errors",
        "unique_key",
    }


async def test_enqueue_with_options_and_unique_key(api: Client) -> None:
    body = {
        "task": "wait",
        "args": {"seconds": 5},
        "queue": "default",
        "priority": 7,
        "max_attempts": 2,
        "timeout_s": 60,
        "unique_key": "nightly",
        "delay_s": 30,
    }
    first = await api.post("/jobs", json=body)
    again = await api.post("/jobs", json=body)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    stored = first.json()
    assert (stored["priority"], stored["max_attempts"], stored["timeout_s"]) == (7, 2, 60)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"task": "nope"}, 422, ["unknown task 'nope'", "sleep"]),
        (
            {"task": "sleep", "args": {"seconds": -1}},
            422,
            ["seconds", "greater than or equal to 0"],
        ),
        ({"task": "sleep", "args": {}}, 422, ["seconds", "Field required"]),
        ({"task": "sleep", "args": {"seconds": 1, "steps": 0}}, 422, ["steps"]),
        ({"args": {}}, 400, ["task"]),
        ({"task": "sleep", "args": {"seconds": 1}, "priority": 101}, 400, ["priority"]),
        (
            {
                "task": "sleep",
                "args": {"seconds": 1},
                "delay_s": 1,
                "run_at": "2030-01-01T00:00:00Z",
            },
            400,
            ["run_at or delay_s"],
        ),
        (
            {"task": "sleep", "args": {"seconds": 1}, "run_at": "2030-01-01T00:00:00"},
            400,
            ["run_at"],
        ),
        ({"task": "sleep", "args": {"seconds": 1}, "queue": "bad queue!"}, 400, ["queue"]),
        ({"task": "sleep", "args": {"seconds": 1}, "max_attempts": 0}, 400, ["max_attempts"]),
        ({"task": "sleep", "args": {"seconds": 1}, "surprise": True}, 400, ["surprise"]),
        ({"task": "sleep", "args": [1, 2]}, 400, ["args"]),
    ],
)
async def test_bad_enqueue_is_a_4xx_naming_the_problem_and_writes_nothing(
    api: Client, db: asyncpg.Connection, body: dict[str, Any], status: int, words: list[str]
) -> None:
    assert_error(await api.post("/jobs", json=body), status, *words)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_body_that_is_not_json_is_a_400(api: Client) -> None:
    response = await api.post("/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, "JSON")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/jobs/abc", 400),
        ("/jobs/0", 400),
        ("/jobs/-3", 400),
        ("/jobs/99999", 404),
        ("/jobs/123456789012345678901", 400),
    ],
)
async def test_get_bad_or_unknown_job_id(api: Client, path: str, status: int) -> None:
    assert_error(await api.get(path), status)


async def test_list_jobs_filters_and_pages_newest_first(api: Client, db: asyncpg.Connection) -> None:
    ids = [await job(db, task="noop", queue="paused-q") for _ in range(5)]
    await job(db, task="sleep", queue="paused-q", args={"seconds": 1})
    failed = await job(db, JobState.FAILED, task="noop", queue="other")
    first = (await api.get("/jobs", params={"task": "noop", "queue": "paused-q", "limit": 2})).json()
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    second = (
        await api.get(
            "/jobs",
            params={
                "task": "noop",
                "queue": "paused-q",
                "limit": 2,
                "cursor": first["next_cursor"],
            },
        )
    ).json()
    assert [j["id"] for j in second["items"]] == ids[::-1][2:4]
    by_state = (await api.get("/jobs", params={"state": "failed"})).json()
    assert [j["id"] for j in by_state["items"]] == [failed]
    assert by_state["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"state": "sleeping"},
        {"queue": "no spaces"},
    ],
)
async def test_list_jobs_rejects_bad_parameters(api: Client, params: dict[str, Any]) -> None:
    assert_error(await api.get("/jobs", params=params), 400)


async def test_cancel_running_job_then_409_on_second_cancel_then_retry(api: Client) -> None:
    created = (await api.post("/jobs", json={"task": "wait", "args": {"seconds": 30}})).json()
    await wait_for_state(api, created["id"], "running")
    response = await api.post(f"/jobs/{created['id']}/cancel")
    assert response.status_code == 202
    await wait_for_state(api, created["id"], "cancelled")
    assert_error(await api.post(f"/jobs/{created['id']}/cancel"), 409, "cancelled")
    retried = await api.post(f"/jobs/{created['id']}/retry")
    assert retried.status_code == 202
    assert retried.json()["state"] == "queued"
    await wait_for_state(api, created["id"], "running")
    assert_error(await api.post(f"/jobs/{created['id']}/retry"), 409, "running")
    assert (await api.post(f"/jobs/{created['id']}/cancel")).status_code == 202


async def test_cancel_and_retry_unknown_or_bad_ids(api: Client) -> None:
    assert_error(await api.post("/jobs/424242/cancel"), 404)
    assert_error(await api.post("/jobs/424242/retry"), 404)
    assert_error(await api.post("/jobs/x/cancel"), 400)


async def test_tasks_lists_each_task_with_its_argument_schema(api: Client) -> None:
    tasks = {t["name"]: t for t in (await api.get("/tasks")).json()}
    assert "sleep" in tasks
    assert "noop" in tasks
    schema = tasks["sleep"]["args_schema"]
    assert set(schema["properties"]) == {"seconds", "steps", "fail"}
    assert schema["required"] == ["seconds"]


async def test_pause_and_resume_a_queue(api: Client) -> None:
    paused = await api.post("/queues/reports/pause")
    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    created = (await api.post("/jobs", json={"task": "noop", "queue": "reports"})).json()
    queues = {q["name"]: q for q in (await api.get("/queues")).json()}
    assert queues["reports"]["paused"]
    assert queues["reports"]["counts"] == {"queued": 1}
    assert queues["reports"]["concurrency"] is None  # this process does not serve 'reports'
    assert queues["default"]["concurrency"] == 100  # the default
    resumed = await api.post("/queues/reports/resume")
    assert resumed.json()["paused"] is False
    assert_error(await api.post("/queues/bad name/pause"), 400)
    assert created["queue"] == "reports"


async def test_health_ready_and_openapi(api: Client) -> None:
    assert (await api.get("/health")).json() == {"status": "ok", "checks": {}}
    ready = await api.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "migrations": True, "services": True}
    schema = (await api.get("/schema/openapi.json")).json()
    for path in (
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/retry",
        "/tasks",
        "/queues",
        "/queues/{name}/pause",
        "/queues/{name}/resume",
        "/health",
        "/ready",
        "/jobs/batch",
        "/jobs/{job_id}/events",
        "/jobs/{job_id}/stream",
        "/schedules",
        "/schedules/{schedule_id}",
        "/schedules/{schedule_id}/trigger",
        "/fetch",
        "/records",
        "/pages",
        "/failures",
        "/imports",
        "/imports/{import_id}",
        "/imports/{import_id}/failed-rows",
    ):
        assert path in schema["paths"], path
    for docs in ("/schema/swagger", "/schema/redoc"):  # their assets come from this process
        page = await api.get(docs)
        assert page.status_code == 200
        assert "https://" not in page.text
        for asset in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text):
            assert (await api.get(asset)).status_code == 200, asset


async def test_ready_is_503_when_migrations_are_behind(api: Client, db: asyncpg.Connection) -> None:
    await db.execute("DELETE FROM schema_migrations")
    response = await api.get("/ready")
    assert_error(response, 503) if "status_code" in response.text else None
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] is False


async def test_request_id_is_kept_when_given(api: Client) -> None:
    response = await api.get("/health", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_batch_enqueue_creates_every_job_in_order(api: Client, db: asyncpg.Connection) -> None:
    body = [
        {"task": "noop"},
        {"task": "sleep", "args": {"seconds": 0}, "priority": 5},
        {"task": "noop", "delay_s": 60},
    ]
    response = await api.post("/jobs/batch", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["count"] == 3
    rows = await db.fetch("SELECT id, task, priority FROM jobs ORDER BY id")
    assert [r["id"] for r in rows] == created["ids"]
    assert [(r["task"], r["priority"]) for r in rows] == [("noop", 0), ("sleep", 5), ("noop", 0)]


async def test_batch_enqueue_takes_ndjson(api: Client, db: asyncpg.Connection) -> None:
    lines = b'{"task": "noop"}\n\n{"task": "sleep", "args": {"seconds": 0}}\n'
    response = await api.post("/jobs/batch", content=lines, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 201, response.text
    assert response.json()["count"] == 2
    assert await db.fetchval("SELECT count(*) FROM jobs") == 2


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"task": "nope"}, ["job 2", "unknown task"]),
        ({"task": "sleep", "args": {"seconds": -1}}, ["job 2", "seconds"]),
        ({"task": "noop", "priority": 900}, ["job 2", "priority"]),
        ({"task": "noop", "unique_key": "k"}, ["job 2", "unique_key"]),
        ("not a job", ["job 2"]),
    ],
)
async def test_batch_with_one_bad_job_names_its_index_and_writes_nothing(
    api: Client, db: asyncpg.Connection, bad: Any, words: list[str]
) -> None:
    response = await api.post("/jobs/batch", json=[{"task": "noop"}, {"task": "noop"}, bad, {"task": "noop"}])
    assert_error(response, 422, *words)
    assert response.json()["extra"]["index"] == 2
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_batch_rejects_too_many_jobs_and_bodies_that_are_not_a_list(api: Client) -> None:
    too_many = await api.post("/jobs/batch", json=[{"task": "noop"}] * 10_001)
    assert_error(too_many, 422, "at most 10000")
    assert_error(await api.post("/jobs/batch", json={"task": "noop"}), 422, "JSON array")
    not_json = await api.post("/jobs/batch", content=b"[{", headers={"content-type": "application/json"})
    assert_error(not_json, 400, "JSON")
    empty = await api.post("/jobs/batch", json=[])
    assert empty.status_code == 201
    assert empty.json() == {"count": 0, "ids": []}


async def test_the_request_id_goes_with_the_jobs_it_enqueues_and_their_logs(api: Client) -> None:
    headers = {"x-request-id": "req-42.a"}
    configure_logging("info", "json", cache=False)  # the suite logs warnings only
    try:
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            response = await api.post(
                "/jobs", json={"task": "enqueue_child", "args": {"marker": "m"}}, headers=headers
            )
            assert response.headers["x-request-id"] == "req-42.a"
            parent = await wait_for_state(api, response.json()["id"], "succeeded")
            child = await wait_for_state(api, parent["result"]["child"], "succeeded")
            failing = await api.post(
                "/jobs",
                json={"task": "sleep", "args": {"seconds": 0, "fail": True}, "max_attempts": 1},
                headers=headers,
            )
            await wait_for_state(api, failing.json()["id"], "failed")
    finally:
        configure_logging("warning", "json", cache=False)
    assert parent["origin"] == {"request_id": "req-42.a"}
    assert child["origin"] == {"request_id": "req-42.a"}  # a task's follow-up keeps its origin
    finished = [e for e in logs if e["event"] == "job_finished" and e.get("job_id") == failing.json()["id"]]
    assert finished, [e["event"] for e in logs]
    assert finished[0]["request_id"] == "req-42.a"
    generated = await api.post("/jobs", json={"task": "noop"}, headers={"x-request-id": "bad id!"})
    assert generated.headers["x-request-id"] != "bad id!"
    assert generated.json()["origin"] == {"request_id": generated.headers["x-request-id"]}
