"""Live progress for real: a server on a free port, websocket and SSE clients, a second process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from skiplock.settings import Settings
from tests.conftest import make_settings
from tests.support.live import live_server
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server(settings: Settings, registry: Any) -> AsyncIterator[str]:
    async with live_server(settings, list(registry)) as base:
        yield base


async def enqueue(http: aiohttp.ClientSession, base: str, **body: Any) -> dict[str, Any]:
    async with http.post(f"{base}/jobs", json=body) as response:
        assert response.status == 201, await response.text()
        job: dict[str, Any] = await response.json()
        return job


async def read_ws(ws: aiohttp.ClientWebSocketResponse, limit: int | None = None) -> list[dict[str, Any]]:
    """Messages until the server closes (or ``limit`` messages)."""
    messages = []
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        messages.append(orjson.loads(message.data))
        if limit is not None and len(messages) >= limit:
            break
    return messages


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


def assert_consecutive(events: list[dict[str, Any]], first: int = 1) -> None:
    assert [e["seq"] for e in events] == list(range(first, first + len(events)))


async def test_subscriber_sees_snapshot_every_progress_event_and_final_state(
    server: str, http: aiohttp.ClientSession
) -> None:
    job = await enqueue(http, server, task="sleep", args={"seconds": 1.0, "steps": 5})
    async with http.ws_connect(
        ws_url(server, f"/ws/jobs/{job['id']}"), timeout=aiohttp.ClientWSTimeout(ws_close=10)
    ) as ws:
        messages = await read_ws(ws)
        assert ws.close_code == 1000
    snapshot, events = messages[0], messages[1:]
    assert snapshot["kind"] == "snapshot"
    assert snapshot["job"]["id"] == job["id"]
    assert_consecutive(events)
    states = [e["data"]["state"] for e in events if e["kind"] == "state"]
    assert states == ["running", "succeeded"]
    progress = [e["data"]["fraction"] for e in events if e["kind"] == "progress"]
    assert progress == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert events[-1]["data"]["state"] == "succeeded"
    kinds = [e["kind"] for e in events]
    assert kinds.index("progress") > kinds.index("state")
    assert kinds[-1] == "state"


async def test_subscriber_on_one_process_follows_a_job_run_by_another(
    dsn: str, registry: Any, http: aiohttp.ClientSession
) -> None:
    api_only = make_settings(dsn, worker=False)
    async with live_server(api_only, list(registry)) as base:
        job = await enqueue(http, base, task="sleep", args={"seconds": 0.8, "steps": 4})
        worker = start_worker(dsn)
        try:
            async with http.ws_connect(ws_url(base, f"/ws/jobs/{job['id']}")) as ws:
                messages = await read_ws(ws)
                assert ws.close_code == 1000
        finally:
            stop_worker(worker)
    events = messages[1:]
    assert_consecutive(events)
    assert [e["data"]["fraction"] for e in events if e["kind"] == "progress"] == [0.25, 0.5, 0.75, 1.0]
    assert events[-1]["data"] == {"state": "succeeded", "previous": "running", "attempt": 1}


async def test_joining_mid_job_and_resuming_with_after_loses_and_repeats_nothing(
    server: str, http: aiohttp.ClientSession
) -> None:
    job = await enqueue(http, server, task="sleep", args={"seconds": 1.5, "steps": 10})
    seen: list[dict[str, Any]] = []
    await wait_until(lambda: _progress_count(http, server, job["id"], at_least=2))
    async with http.ws_connect(ws_url(server, f"/ws/jobs/{job['id']}?after=2")) as ws:
        seen += (await read_ws(ws, limit=4))[1:]
    async with http.ws_connect(ws_url(server, f"/ws/jobs/{job['id']}?after={seen[-1]['seq']}")) as ws:
        seen += (await read_ws(ws))[1:]
    assert_consecutive(seen, first=3)
    async with http.get(f"{server}/jobs/{job['id']}/events") as response:
        history = (await response.json())["items"]
    assert [e["seq"] for e in history] == list(range(1, seen[-1]["seq"] + 1))
    assert [e["data"] for e in history[2:]] == [e["data"] for e in seen]


async def _progress_count(http: aiohttp.ClientSession, base: str, job_id: int, at_least: int) -> bool:
    async with http.get(f"{base}/jobs/{job_id}/events") as response:
        items = (await response.json())["items"]
    return sum(1 for e in items if e["kind"] == "progress") >= at_least


async def read_sse(
    response: aiohttp.ClientResponse, limit: int | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """(id, data) of each server-sent event until the stream ends (or ``limit``)."""
    events: list[tuple[int, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
            continue
        if "data" in fields and "id" in fields:
            events.append((int(fields["id"]), orjson.loads(fields["data"])))
            if limit is not None and len(events) >= limit:
                break
        fields = {}
    return events


async def test_sse_stream_resumes_from_last_event_id_and_ends_after_the_final_state(
    server: str, http: aiohttp.ClientSession
) -> None:
    job = await enqueue(http, server, task="sleep", args={"seconds": 1.0, "steps": 5})
    async with http.get(f"{server}/jobs/{job['id']}/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first = await read_sse(response, limit=3)
    last_id = first[-1][0]
    async with http.get(
        f"{server}/jobs/{job['id']}/stream", headers={"Last-Event-ID": str(last_id)}
    ) as response:
        rest = await read_sse(response)
    ids = [i for i, _ in first + rest]
    assert ids == list(range(1, len(ids) + 1))
    assert rest[-1][1]["data"]["state"] == "succeeded"
    assert all(data["seq"] == i for i, data in first + rest)


async def test_event_larger_than_a_notify_payload_arrives_whole(
    server: str, http: aiohttp.ClientSession
) -> None:
    job = await enqueue(http, server, task="chatty", args={"lines": 2, "size": 50_000})
    async with http.ws_connect(ws_url(server, f"/ws/jobs/{job['id']}"), max_msg_size=0) as ws:
        events = (await read_ws(ws))[1:]
    logs = [e for e in events if e["kind"] == "log"]
    assert [e["data"]["fields"]["n"] for e in logs] == [0, 1]
    assert all(len(e["data"]["fields"]["text"]) == 50_000 for e in logs)


async def test_subscriber_that_never_reads_holds_back_nobody_and_later_gets_everything(
    dsn: str, registry: Any, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    # A buffer larger than one write's burst (0.1 s of 2 ms-paced lines), and far more data than
    # the TCP buffers between the server and a client that never reads can hold.
    small_buffers = make_settings(dsn, subscriber_buffer=200)
    async with live_server(small_buffers, list(registry)) as base:
        job = await enqueue(http, base, task="chatty", args={"lines": 800, "size": 50_000, "pause_s": 0.002})
        url = ws_url(base, f"/ws/jobs/{job['id']}")
        async with http.ws_connect(url, max_msg_size=0) as slow, http.ws_connect(url, max_msg_size=0) as fast:
            fast_events = (await read_ws(fast))[1:]
            assert fast.close_code == 1000
            # The slow one never read while all that was sent: the hub stopped reading for it (its
            # buffer bounds what it holds); reading now, it gets the rest from the table.
            slow_events = (await read_ws(slow))[1:]
            assert slow.close_code == 1000
    assert fast_events[-1]["data"]["state"] == "succeeded"
    assert_consecutive(fast_events)
    assert [e["seq"] for e in slow_events] == [e["seq"] for e in fast_events]
    assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", job["id"]) == "succeeded"


async def test_unknown_job_and_bad_after_are_clear_errors(server: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(ws_url(server, "/ws/jobs/987654")) as ws:
        assert await read_ws(ws) == []
        assert ws.close_code == 4404
    async with http.ws_connect(ws_url(server, "/ws/jobs/1?after=soon")) as ws:
        await read_ws(ws)
        assert ws.close_code == 4400
    async with http.get(f"{server}/jobs/987654/events") as response:
        assert response.status == 404
    async with http.get(f"{server}/jobs/1/events?after=-1") as response:
        assert response.status == 400
        assert "after" in await response.text()
    async with http.get(f"{server}/jobs/987654/stream") as response:
        assert response.status == 404
    async with http.get(f"{server}/jobs/1/stream", headers={"Last-Event-ID": "x"}) as response:
        assert response.status == 400


async def test_all_events_stream_filters_by_queue(
    dsn: str, registry: Any, http: aiohttp.ClientSession
) -> None:
    two_queues = make_settings(dsn, queues=["default", "reports"])
    async with live_server(two_queues, list(registry)) as base:
        async with http.ws_connect(ws_url(base, "/ws/events?queue=reports")) as ws:
            other = await enqueue(http, base, task="noop", queue="default")
            wanted = await enqueue(http, base, task="noop", queue="reports")
            events: list[dict[str, Any]] = []
            while not events or events[-1]["data"].get("state") != "succeeded":
                events += await read_ws(ws, limit=1)
        async with http.get(f"{base}/jobs/{other['id']}/events") as response:
            other_events = (await response.json())["items"]
    assert {e["job_id"] for e in events} == {wanted["id"]}
    assert [e["data"]["state"] for e in events] == ["running", "succeeded"]
    assert other_events, "the other job ran too: the filter, not idleness, kept its events out"


async def test_a_subscriber_joining_during_a_read_still_gets_every_earlier_event(
    engine: Any, db: asyncpg.Connection
) -> None:
    from skiplock.queue.events import EventHub
    from skiplock.queue.models import JobState
    from tests.factories import job

    job_id = await job(db, JobState.RUNNING)
    for seq in range(1, 7):
        await db.execute(
            "INSERT INTO job_events (job_id, seq, kind, data) VALUES ($1, $2, 'log', '{}')", job_id, seq
        )
    hub = EventHub(engine.pool)  # its loop is not running: this test drives the reads
    early = hub.subscribe_job(job_id, after=3)
    reading = asyncio.ensure_future(hub._deliver_to_jobs())
    await asyncio.sleep(0)  # the read has taken its position (after 3) and its query is out
    late = hub.subscribe_job(job_id, after=0)
    await reading
    await hub._deliver_to_jobs()  # the late subscriber's own read
    assert [e.seq for e in await buffered(early, 3)] == [4, 5, 6]
    assert [e.seq for e in await buffered(late, 6)] == [1, 2, 3, 4, 5, 6]


async def buffered(sub: Any, count: int) -> list[Any]:
    """What the subscription holds, up to ``count`` events (fails fast instead of waiting forever)."""
    events = []
    for _ in range(count):
        try:
            events.append(await asyncio.wait_for(sub.get(), timeout=2))
        except TimeoutError:
            break
    return events
