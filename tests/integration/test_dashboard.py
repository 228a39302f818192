"""The dashboard's pages through the app: status, key content, never a server error; and the API
reads it is built on (queue activity, failure groups)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from litestar.testing import AsyncTestClient

from skiplock.queue import Engine
from skiplock.queue.models import JobState
from skiplock.ui import dag, pages
from tests.factories import job
from tests.integration.test_api import wait_for_state
from tests.support.waiting import wait_until

Client = AsyncTestClient[Any]


def text_of(html: str) -> str:
    """The page's text with tags and runs of whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


async def test_root_redirects_to_the_overview(api: Client) -> None:
    response = await api.get("/", follow_redirects=False)
    assert response.status_code in (301, 302, 307)
    assert response.headers["location"] == "/ui"


async def test_overview_shows_counts_per_queue(api: Client, db: asyncpg.Connection) -> None:
    for _ in range(3):
        await job(db, queue="mail", state=JobState.QUEUED)
    await job(db, queue="mail", state=JobState.FAILED)
    await api.post("/queues/mail/pause")
    page = await api.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    row = re.search(r'<tr data-queue="mail".*?</tr>', page.text, re.S)
    assert row is not None
    cells = dict(re.findall(r'data-state="(\w+)"><a [^>]*>(\d+)</a>', row.group(0)))
    assert cells["queued"] == "3"
    assert cells["failed"] == "1"
    assert "paused" in row.group(0)
    assert 'data-action="resume"' in row.group(0)
    fragment = await api.get("/ui", params={"fragment": "true"})
    assert fragment.text.lstrip().startswith("<table")
    assert "<header>" not in fragment.text


async def test_queues_api_reports_oldest_queued_and_last_hour(api: Client, db: asyncpg.Connection) -> None:
    await job(db, queue="q1", state=JobState.QUEUED)
    await job(db, queue="q1", state=JobState.SUCCEEDED)
    await job(db, queue="q1", state=JobState.FAILED)
    q1 = next(q for q in (await api.get("/queues")).json() if q["name"] == "q1")
    assert q1["oldest_queued_at"] is not None
    assert q1["finished_last_hour"] == 2


async def test_jobs_page_filters_and_pages(api: Client, db: asyncpg.Connection) -> None:
    ids = [await job(db, task="noop", state=JobState.SUCCEEDED) for _ in range(55)]
    other = await job(db, task="record_run", state=JobState.FAILED)
    first = await api.get("/ui/jobs", params={"task": "noop"})
    assert first.status_code == 200
    shown = [int(i) for i in re.findall(r'href="/ui/jobs/(\d+)"', first.text)]
    assert shown == sorted(ids, reverse=True)[:50]
    assert other not in shown
    cursor = re.search(r"cursor=(\d+)", first.text)
    assert cursor is not None
    second = await api.get("/ui/jobs", params={"task": "noop", "cursor": cursor.group(1)})
    assert [int(i) for i in re.findall(r'href="/ui/jobs/(\d+)"', second.text)] == sorted(ids, reverse=True)[
        50:
    ]
    failed = await api.get("/ui/jobs", params={"state": "failed"})
    assert [int(i) for i in re.findall(r'href="/ui/jobs/(\d+)"', failed.text)] == [other]
    assert (await api.get("/ui/jobs", params={"state": "bogus"})).status_code == 400


async def test_job_page_shows_fields_result_and_errors(api: Client) -> None:
    created = (await api.post("/jobs", json={"task": "sleep", "args": {"seconds": 0, "fail": True}})).json()
    await wait_for_state(api, created["id"], "failed")
    page = await api.get(f"/ui/jobs/{created['id']}")
    assert page.status_code == 200
    text = text_of(page.text)
    assert f"Job {created['id']} failed" in text
    assert "SleepFailed: failed on purpose after 0s" in text
    assert "Traceback" in page.text
    assert '"seconds": 0.0' in page.text
    missing = await api.get("/ui/jobs/999999")
    assert missing.status_code == 404
    assert "No job 999999" in missing.text
    assert (await api.get("/ui/jobs/abc")).status_code in (400, 404)


async def test_schedules_page_says_the_cron_in_words(api: Client) -> None:
    body = {"name": "nightly", "cron": "*/5 9-17 * * 1-5", "task": "noop", "timezone": "Europe/Paris"}
    created = await api.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    text = text_of((await api.get("/ui/schedules")).text)
    assert "nightly" in text
    assert "Every 5 minutes, between 09:00 AM and 05:59 PM, Monday through Friday" in text
    assert "Europe/Paris" in text
    assert 'data-action="trigger"' in (await api.get("/ui/schedules")).text


async def test_failures_are_grouped_by_task_and_error_type(api: Client, db: asyncpg.Connection) -> None:
    for _ in range(2):
        await job(db, task="noop", state=JobState.FAILED)
    await job(db, task="record_run", state=JobState.FAILED)
    many = [await job(db, task="chatty", state=JobState.FAILED) for _ in range(25)]
    groups = (await api.get("/failures")).json()
    assert [(g["task"], g["count"]) for g in groups] == [("chatty", 25), ("noop", 2), ("record_run", 1)]
    assert groups[0]["job_ids"] == sorted(many, reverse=True)[:20]  # the newest 20, newest first
    assert len(groups[1]["job_ids"]) == 2
    page = await api.get("/ui/failures")
    assert page.status_code == 200
    assert "Retry 20" in page.text
    assert "Retry 2<" in page.text
    assert "<title>Failures · skiplock</title>" in page.text
    assert '<body data-page="failures">' in page.text


async def test_failures_are_grouped_among_the_newest_failed_jobs_only(
    engine: Engine, db: asyncpg.Connection
) -> None:
    for _ in range(3):
        await job(db, task="noop", state=JobState.FAILED)
    newest = [await job(db, task="chatty", state=JobState.FAILED) for _ in range(2)]
    groups = await engine.client.failures(ids_per_group=1, window=3)
    assert [(g.task, g.count, g.job_ids) for g in groups] == [
        ("chatty", 2, [newest[1]]),
        ("noop", 1, [newest[0] - 1]),
    ]


async def test_enqueue_page_carries_every_task_schema(api: Client) -> None:
    page = await api.get("/ui/enqueue")
    assert page.status_code == 200
    assert '<option value="sleep">sleep</option>' in page.text
    assert '"seconds"' in page.text  # the sleep task's schema, for the form built in the browser


async def test_static_files_are_served_with_caching_headers(api: Client) -> None:
    script = await api.get("/ui/static/app.js")
    assert script.status_code == 200
    assert "max-age=3600" in script.headers["cache-control"]
    assert "function overview" in script.text
    assert (await api.get("/ui/static/nope.js")).status_code == 404


async def test_dashboard_is_not_in_the_api_schema(api: Client) -> None:
    paths = (await api.get("/schema/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/ui") or p == "/"]


async def test_imports_with_failed_rows_are_listed_with_their_rows(api: Client) -> None:
    clean = "sku,name,price,quantity\nA1,Apple,1.50,3\n"
    dirty = "sku,name,price,quantity\nB1,Pear,-1,3\nB2,Plum,2.00,x\n"
    created = []
    for body in (clean, dirty):
        response = await api.post("/imports", content=body, headers={"content-type": "text/csv"})
        assert response.status_code == 202, response.text
        created.append(response.json())
        await wait_for_state(api, response.json()["job"]["id"], "succeeded")
    listed = (await api.get("/imports", params={"with_failures": "true"})).json()
    assert [i["id"] for i in listed["items"]] == [created[1]["import_id"]]
    everything = (await api.get("/imports", params={"limit": 1})).json()
    assert [i["id"] for i in everything["items"]] == [created[1]["import_id"]]
    older = (await api.get("/imports", params={"limit": 1, "cursor": everything["next_cursor"]})).json()
    assert [i["id"] for i in older["items"]] == [created[0]["import_id"]]
    failures = await api.get("/ui/failures")
    assert f'href="/ui/imports/{created[1]["import_id"]}"' in failures.text
    assert f'href="/ui/imports/{created[0]["import_id"]}"' not in failures.text
    page = text_of((await api.get(f"/ui/imports/{created[1]['import_id']}")).text)
    assert "2 read, 0 loaded, 2 failed" in page
    assert "negative price" in page
    assert "B2,Plum,2.00,x" in page
    assert (await api.get("/ui/imports/999999")).status_code == 404
    for bad in (
        {"cursor": "x"},
        {"cursor": "0"},
        {"limit": "0"},
        {"limit": "501"},
        {"with_failures": "maybe"},
    ):
        response = await api.get("/imports", params=bad)
        assert response.status_code == 400, bad
        assert response.json()["status_code"] == 400


DIAMOND: list[dict[str, Any]] = [
    {"name": "fetch", "task": "echo"},
    {"name": "small", "task": "echo", "after": ["fetch"]},
    {"name": "large", "task": "echo", "after": ["fetch"]},
    {"name": "publish", "task": "echo", "after": ["small", "large"]},
]


async def start_workflow(api: Client, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    response = await api.post("/workflows", json={"steps": steps, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def workflow_ended(api: Client, workflow_id: int) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/workflows/{workflow_id}")).json()
        return body if body["finished_at"] else None

    found: dict[str, Any] = await wait_until(ended, 15)
    return found


def workflow_rows(html: str) -> list[tuple[int, str]]:
    """(id, state) of each row of the workflows table, in order."""
    rows = re.findall(r'<tr data-workflow="(\d+)">.*?<span class="state (\w+)">', html, re.S)
    return [(int(i), state) for i, state in rows]


async def test_workflows_page_lists_newest_first_with_progress_filters_and_pages(
    api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = [await start_workflow(api, DIAMOND, name=f"diamond {n}") for n in range(2)]
    bad = await start_workflow(
        api,
        [
            {"name": "boom", "task": "sleep", "args": {"seconds": 0, "fail": True}, "max_attempts": 1},
            {"name": "after", "task": "echo", "after": ["boom"]},
            {"name": "aside", "task": "echo"},
        ],
        name="doomed",
    )
    for created in (*good, bad):
        await workflow_ended(api, created["id"])
    page = await api.get("/ui/workflows")
    assert page.status_code == 200
    assert workflow_rows(page.text) == [
        (bad["id"], "failed"),
        (good[1]["id"], "succeeded"),
        (good[0]["id"], "succeeded"),
    ]
    assert f'href="/ui/workflows/{bad["id"]}"' in page.text
    row = re.search(rf'<tr data-workflow="{bad["id"]}">.*?</tr>', page.text, re.S)
    assert row is not None
    assert "doomed" in row.group(0)
    assert '<td class="num" data-progress>3/3</td>' in row.group(0)  # boom failed, after cancelled, aside ran
    assert 'href="/ui/workflows"' in page.text  # the nav entry
    failed = await api.get("/ui/workflows", params={"state": "failed"})
    assert workflow_rows(failed.text) == [(bad["id"], "failed")]
    assert "<option selected>failed</option>" in failed.text
    assert workflow_rows((await api.get("/ui/workflows", params={"state": "running"})).text) == []
    assert (await api.get("/ui/workflows", params={"state": "bogus"})).status_code == 400

    monkeypatch.setattr(pages, "WORKFLOWS_PER_PAGE", 2)
    first = await api.get("/ui/workflows")
    assert [i for i, _ in workflow_rows(first.text)] == [bad["id"], good[1]["id"]]
    cursor = re.search(r'class="next" href="/ui/workflows\?state=&cursor=(\d+)"', first.text)
    assert cursor is not None
    second = await api.get("/ui/workflows", params={"cursor": cursor.group(1)})
    assert [i for i, _ in workflow_rows(second.text)] == [good[0]["id"]]
    assert 'class="next"' not in second.text


async def test_workflow_page_draws_the_dag_with_links_to_the_steps_jobs(api: Client) -> None:
    created = await start_workflow(api, DIAMOND, name="thumbnails")
    done = await workflow_ended(api, created["id"])
    page = await api.get(f"/ui/workflows/{created['id']}")
    assert page.status_code == 200
    text = text_of(page.text)
    assert f"Workflow {created['id']} · thumbnails succeeded" in text
    assert "4 of 4 steps finished (4 succeeded, 0 failed, 0 cancelled)" in text
    nodes = re.findall(
        r'<a class="node" href="/ui/jobs/(\d+)" data-job="\d+" data-step="(\w+)"'
        r' data-state="(\w+)" data-layer="(\d)"',
        page.text,
    )
    assert sorted((s, int(j), state, int(layer)) for j, s, state, layer in nodes) == sorted(
        (s["name"], s["job_id"], "succeeded", {"fetch": 0, "publish": 2}.get(s["name"], 1))
        for s in done["steps"]
    )
    edges = re.findall(r'<path class="edge" d="[^"]+" data-from="(\w+)" data-to="(\w+)"', page.text)
    assert sorted(edges) == sorted(
        [("fetch", "small"), ("fetch", "large"), ("small", "publish"), ("large", "publish")]
    )
    assert re.search(r'<button id="wf-cancel" disabled>', page.text)
    assert re.search(r'<button id="wf-retry" disabled>', page.text)  # succeeded: nothing to retry
    step_page = await api.get(f"/ui/jobs/{done['steps'][0]['job_id']}")
    assert f'href="/ui/workflows/{created["id"]}"' in step_page.text
    missing = await api.get("/ui/workflows/999999")
    assert missing.status_code == 404
    assert "No workflow 999999" in missing.text
    assert (await api.get("/ui/workflows/abc")).status_code in (400, 404)


async def test_a_workflow_too_large_to_draw_lists_its_steps_by_layer(api: Client) -> None:
    count = dag.MAX_DRAWN_STEPS + 1
    steps: list[dict[str, Any]] = [{"name": f"s{i}", "task": "echo"} for i in range(count - 1)]
    steps.append({"name": "callback", "task": "echo", "after": [f"s{i}" for i in range(count - 1)]})
    created = await start_workflow(api, steps)
    page = await api.get(f"/ui/workflows/{created['id']}")
    assert page.status_code == 200
    assert "<svg" not in page.text
    layers = re.findall(r'<tr data-layer="(\d+)"><td class="num">\d+ \((\d+)\)</td>', page.text)
    assert layers == [("0", str(count - 1)), ("1", "1")]
    assert len(re.findall(r'<a class="step" href="/ui/jobs/\d+" data-job=', page.text)) == count


def test_a_moment_is_a_time_element_past_or_future() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert pages.when(now - timedelta(minutes=4), now) == (
        '<time datetime="2026-05-01T11:56:00+00:00" title="2026-05-01 11:56:00 UTC">4m ago</time>'
    )
    assert str(pages.when(now + timedelta(hours=3), now)).endswith(">in 3h</time>")
    assert pages.when(None) == "\u2013"  # an en dash


async def test_queue_page_shows_its_counts_and_limits(api: Client, db: asyncpg.Connection) -> None:
    await job(db, queue="partner", state=JobState.QUEUED)
    change = {"global_concurrency": 5, "rate_limit": "100/minute"}
    assert (await api.patch("/queues/partner", json=change)).status_code == 200
    page = await api.get("/ui/queues/partner")
    assert page.status_code == 200
    assert 'id="limit-global" name="global_concurrency"' in page.text
    assert 'value="5"' in page.text
    assert 'value="100/minute"' in page.text
    overview = await api.get("/ui")
    row = re.search(r'<tr data-queue="partner".*?</tr>', overview.text, re.S)
    assert row is not None
    assert "<td data-limits>5 global, 100/minute</td>" in row.group(0)
    assert 'href="/ui/queues/partner"' in row.group(0)
    assert (await api.get("/ui/queues/nowhere")).status_code == 404
    assert (await api.get("/ui/queues/bad%20name")).status_code == 400


async def test_jobs_search_by_args_error_and_id(api: Client, db: asyncpg.Connection) -> None:
    wanted = await job(db, task="echo", args={"customer_id": 42, "plan": "pro"}, state=JobState.QUEUED)
    await job(db, task="echo", args={"customer_id": 7}, state=JobState.QUEUED)
    form = {"id": "", "state": "", "queue": "", "task": "", "error": ""}
    page = await api.get("/ui/jobs", params={**form, "args": '{"customer_id": 42}'})
    assert page.status_code == 200, text_of(page.text)
    assert re.findall(r'<tr data-job="(\d+)"', page.text) == [str(wanted)]
    assert 'data-live="true"' in page.text
    bad = await api.get("/ui/jobs", params={"args": "[42"})
    assert bad.status_code == 400
    assert "args: not JSON" in bad.text
    assert 'data-live="true"' not in bad.text  # its re-renders would fail alike, each a console error
    assert (await api.get("/ui/jobs", params={"args": "[42]"})).status_code == 400
    found = await api.get("/ui/jobs", params={"id": str(wanted)}, follow_redirects=False)
    assert found.status_code in (302, 303)
    assert found.headers["location"] == f"/ui/jobs/{wanted}"
    assert (await api.get("/ui/jobs", params={"id": "999999"})).status_code == 404
    assert (await api.get("/ui/jobs", params={"id": "abc"})).status_code == 404


async def test_a_search_walks_the_table_a_window_at_a_time(engine: Engine, db: asyncpg.Connection) -> None:
    """Bounded pages: each reads at most ``window`` ids, its cursor going on below them; error text
    is matched literally (a % is no wildcard) in an attempt's type or message."""
    error = (
        '[{"attempt": 1, "at": "2026-05-01T12:00:00+00:00", "type": "QuotaError",'
        ' "message": "over 100% of the quota"}]'
    )
    ids = [await job(db, task="echo", args={"n": n, "even": n % 2 == 0}) for n in range(25)]
    failed = await job(db, task="echo", state=JobState.FAILED, errors=orjson.loads(error))
    client = engine.client
    first = await client.search_jobs(args={"even": True}, window=10)
    assert (first.searched_from, first.searched_to) == (failed - 9, failed)
    assert [j.id for j in first.items] == [i for i in ids[-9:] if (i - ids[0]) % 2 == 0][::-1]
    assert first.next_cursor == failed - 9
    second = await client.search_jobs(args={"even": True}, window=10, before_id=first.next_cursor)
    assert (second.searched_from, second.searched_to) == (failed - 19, failed - 10)
    last = await client.search_jobs(args={"even": True}, window=10, before_id=failed - 19)
    assert last.searched_from == 1
    assert last.next_cursor is None
    found = [j.id for page in (first, second, last) for j in page.items]
    assert found == [i for i in ids if (i - ids[0]) % 2 == 0][::-1]
    assert [j.id for j in (await client.search_jobs(error="100% of")).items] == [failed]
    assert [j.id for j in (await client.search_jobs(error="quotaerror")).items] == [failed]
    assert (await client.search_jobs(error="100%%")).items == []
    assert (await client.search_jobs(error="_ver")).items == []
    limited = await client.search_jobs(args={"even": False}, limit=3)
    assert [j.id for j in limited.items] == [ids[23], ids[21], ids[19]]
    assert limited.next_cursor == ids[19]
