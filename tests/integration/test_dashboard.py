"""The dashboard's pages through the app: status, key content, never a server error; and the API
reads it is built on (queue activity, failure groups)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from skiplock.queue.models import JobState
from tests.factories import job
from tests.integration.test_api import wait_for_state

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
