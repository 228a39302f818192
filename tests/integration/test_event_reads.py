"""Bounded live reads: long histories read in pages, resumes that read only what they missed, SSE
replay from Last-Event-ID, and subscribers told (closed with 4409) when they may have missed events.

Each case prints what it measured (run with ``-s`` to see it)."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from skiplock.api.events import follow
from skiplock.api.plugin import SkiplockPlugin
from skiplock.app import create_app
from skiplock.db.pool import create_pool
from skiplock.queue.engine import Engine
from skiplock.queue.events import EventHub, EventsMissed
from skiplock.queue.models import JobState
from skiplock.settings import Settings
from tests.factories import job
from tests.integration.test_events import enqueue, read_sse, ws_url
from tests.support.faults import private_postgres
from tests.support.live import serve
from tests.support.waiting import wait_until

RESUME = 4409  # the documented "you may have missed events" close code


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@asynccontextmanager
async def live_app(settings: Settings, registry: Any) -> AsyncIterator[tuple[str, Engine]]:
    """A live server and the engine inside it."""
    app = create_app(settings, tasks=list(registry))
    async with serve(app) as base:
        yield base, app.plugins.get(SkiplockPlugin).engine


async def long_history(db: asyncpg.Connection, count: int) -> int:
    """A succeeded job with ``count`` events (log lines, then its final state), in one INSERT."""
    job_id = await job(db, JobState.SUCCEEDED)
    await db.execute(
        """
        INSERT INTO job_events (job_id, seq, kind, data)
        SELECT $1, g,
               CASE WHEN g = $2 THEN 'state' ELSE 'log' END,
               CASE WHEN g = $2 THEN '{"state": "succeeded", "previous": "running", "attempt": 1}'::jsonb
                    ELSE jsonb_build_object('level', 'info', 'message', 'line ' || g, 'fields', '{}'::jsonb)
               END
        FROM generate_series(1, $2) AS g
        """,
        job_id,
        count,
    )
    await db.execute("UPDATE jobs SET event_seq = $2 WHERE id = $1", job_id, count)
    return job_id


def rss_kib(field: str = "VmRSS") -> int:
    """This process's resident memory (``VmHWM``: its peak since ``reset_peak_rss``), in KiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:")))


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


async def read_until_closed(
    ws: aiohttp.ClientWebSocketResponse, timeout: float = 60, keep: Callable[[Any], Any] = lambda m: m
) -> tuple[list[Any], int | None, str]:
    """Every message (what ``keep`` keeps of it) until the server closes: (messages, close code,
    close reason)."""
    messages: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                return messages, ws.close_code, str(message.extra or "")
            messages.append(keep(json.loads(message.data)))  # as a browser would: numbers of any size


async def test_resume_near_the_end_of_a_long_history_reads_only_the_rest(
    db: asyncpg.Connection, settings: Settings, registry: Any, http: aiohttp.ClientSession
) -> None:
    job_id = await long_history(db, 200_000)
    async with live_app(settings, registry) as (base, _engine):
        url = ws_url(base, f"/ws/jobs/{job_id}")
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            # A page left open from the start (a dashboard tab in the background) that reads slowly.
            async with http.ws_connect(f"{url}?after=0", max_msg_size=0) as idle:
                assert orjson.loads((await idle.receive()).data)["kind"] == "snapshot"
                started = time.monotonic()
                async with http.ws_connect(f"{url}?after=199000") as resumed:
                    messages, code, _ = await read_until_closed(resumed)
                elapsed = time.monotonic() - started
                peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
    print(
        f"\nafter=199000 of 200,000: {len(messages) - 1} events in {elapsed:.2f} s,"
        f" peak +{peak / 2**20:.1f} MiB"
    )
    assert [e["seq"] for e in messages[1:]] == list(range(199_001, 200_001))
    assert code == 1000
    assert peak < 40 * 2**20
    assert elapsed < 5


async def test_a_subscriber_from_the_start_gets_every_event_in_order(
    db: asyncpg.Connection, settings: Settings, registry: Any, http: aiohttp.ClientSession
) -> None:
    count = 50_000
    job_id = await long_history(db, count)
    async with live_app(settings, registry) as (base, _engine):
        rss_before = rss_kib()
        reset_peak_rss()
        started = time.monotonic()
        async with http.ws_connect(ws_url(base, f"/ws/jobs/{job_id}"), max_msg_size=0) as ws:
            # Reads steadily, and meanwhile follows a job that runs now: its events are not
            # held back behind the catch-up.
            first = await ws.receive()
            assert orjson.loads(first.data)["kind"] == "snapshot"
            # Only the seqs are kept: the memory measured is the server's, not the client's copy.
            reading = asyncio.ensure_future(read_until_closed(ws, keep=lambda e: e["seq"]))
            live_started = time.monotonic()
            other = await enqueue(http, base, task="noop")
            async with http.ws_connect(ws_url(base, f"/ws/jobs/{other['id']}")) as live:
                live_messages, live_code, _ = await read_until_closed(live, timeout=30)
            live_elapsed = time.monotonic() - live_started
            messages, code, reason = await reading
        elapsed = time.monotonic() - started
        peak_growth = rss_kib("VmHWM") - rss_before
    print(
        f"\nfrom 0 of {count:,}: {len(messages):,} events in {elapsed:.2f} s (close {code} {reason!r}),"
        f" peak RSS +{peak_growth / 1024:.1f} MiB; a live job meanwhile: enqueue to final event"
        f" {live_elapsed:.2f} s"
    )
    assert code == 1000, reason
    assert messages == list(range(1, count + 1))
    assert live_code == 1000
    assert live_messages[-1]["data"]["state"] == "succeeded"
    assert peak_growth < 32 * 1024


async def test_sse_replay_of_a_finished_job_returns_exactly_the_events_after_last_event_id(
    settings: Settings, registry: Any, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    async with live_app(settings, registry) as (base, engine):
        job = await enqueue(http, base, task="sleep", args={"seconds": 0.2, "steps": 3})
        await wait_until(
            lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job["id"]), timeout=30
        )
        last = await db.fetchval("SELECT event_seq FROM jobs WHERE id = $1", job["id"])
        seen: dict[int, list[int]] = {}
        for after in range(last + 1):
            async with http.get(
                f"{base}/jobs/{job['id']}/stream",
                headers={"Last-Event-ID": str(after)},
                timeout=aiohttp.ClientTimeout(total=20),
            ) as response:
                assert response.status == 200, await response.text()
                seen[after] = [seq for seq, _ in await read_sse(response)]
        try:  # every stream ended, so every subscription is gone
            await wait_until(lambda: not engine.hub._by_job, timeout=5)
            left = 0
        except AssertionError:
            left = sum(len(subs) for subs in engine.hub._by_job.values())
    print(f"\nSSE replay of a finished job with {last} events: {seen}; subscriptions left behind: {left}")
    assert left == 0
    assert seen == {after: list(range(after + 1, last + 1)) for after in range(last + 1)}


async def test_a_finished_jobs_stream_sends_its_events_even_when_the_hub_buffered_them_first(
    engine: Engine, db: asyncpg.Connection
) -> None:
    # The race behind "Last-Event-ID of a finished job returns no events": the hub can fill the
    # buffer before the stream's first step, which then saw last_seq == event_seq and ended.
    job_id = await long_history(db, 5)
    job = await engine.client.get(job_id)
    sub = engine.hub.subscribe_job(job_id, after=1)
    await wait_until(lambda: sub.last_seq == 5)  # everything buffered before the stream begins
    seqs = [event.seq async for event in follow(engine.hub, sub, job, 1)]
    print(f"\nLast-Event-ID 1 of a finished job, events buffered first: {seqs}")
    assert seqs == [2, 3, 4, 5]


async def test_websocket_clients_that_leave_mid_job_leave_no_subscription_behind(
    settings: Settings, registry: Any, http: aiohttp.ClientSession
) -> None:
    async with live_app(settings, registry) as (base, engine):
        job = await enqueue(http, base, task="sleep", args={"seconds": 30, "steps": 1})  # quiet for 30 s
        async with (
            http.ws_connect(ws_url(base, f"/ws/jobs/{job['id']}")) as one,
            http.ws_connect(ws_url(base, "/ws/events")),
        ):
            assert orjson.loads((await one.receive()).data)["kind"] == "snapshot"
            await wait_until(lambda: engine.hub._by_job and engine.hub._everything, timeout=10)
        # Both clients went away while the job runs and sends nothing: the server noticed, and
        # its senders stopped and unsubscribed without waiting for another event.
        await wait_until(lambda: not engine.hub._by_job and not engine.hub._everything, timeout=5)
        await http.post(f"{base}/jobs/{job['id']}/cancel")


async def test_sse_replay_of_a_long_history_returns_every_event_after_last_event_id_then_ends(
    settings: Settings, registry: Any, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    count = 3_000  # three times the subscriber buffer
    job_id = await long_history(db, count)
    seen: dict[int, tuple[int, int, int]] = {}
    async with live_app(settings, registry) as (base, _engine):
        for after in (0, 1, 1_500, count - 1, count):
            async with http.get(
                f"{base}/jobs/{job_id}/stream",
                headers={"Last-Event-ID": str(after)},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                assert response.status == 200, await response.text()
                seqs = [seq for seq, _ in await read_sse(response)]
            assert seqs == list(range(after + 1, count + 1)), (after, len(seqs))
            seen[after] = (len(seqs), seqs[0] if seqs else 0, seqs[-1] if seqs else 0)
    print(f"\nSSE replay of {count:,} events, Last-Event-ID -> (count, first, last): {seen}")


async def test_all_events_subscribers_are_closed_with_the_resume_code_after_a_listener_reconnect(
    settings: Settings, registry: Any, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    async with live_app(settings, registry) as (base, engine):
        async with http.ws_connect(ws_url(base, "/ws/events")) as everything:
            seen = await enqueue(http, base, task="noop")
            while True:  # the stream works: the job's final state arrives
                event = orjson.loads((await asyncio.wait_for(everything.receive(), 30)).data)
                if event["job_id"] == seen["id"] and event["data"].get("state") == "succeeded":
                    break
            # A job that reports while the listener is away: its own subscriber still misses nothing.
            job = await enqueue(http, base, task="sleep", args={"seconds": 1.0, "steps": 5})
            async with http.ws_connect(ws_url(base, f"/ws/jobs/{job['id']}")) as follower:
                pid = engine.listener.connection_pid
                await db.execute("SELECT pg_terminate_backend($1)", pid)
                started = time.monotonic()
                try:
                    _, code, reason = await read_until_closed(everything, timeout=15)
                except TimeoutError:
                    code, reason = None, "not closed within 15 s"
                told_in = time.monotonic() - started
                followed, follower_code, _ = await read_until_closed(follower, timeout=30)
        reconnects = engine.listener.signals.reconnects
    print(f"\nlistener reconnects {reconnects}; /ws/events closed {code} {reason!r} after {told_in:.2f} s")
    assert reconnects >= 1
    assert code == RESUME, reason
    assert "reconnect" in reason
    assert follower_code == 1000
    events = followed[1:]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["state"] == "succeeded"


async def test_all_events_subscribers_are_told_after_a_failed_read_and_the_hub_goes_on() -> None:
    async with private_postgres() as server:
        pool = await create_pool(server.dsn, min_size=1, max_size=2)
        hub = EventHub(pool)  # no listener: the test hands it the hints
        ready = asyncio.Event()
        running = asyncio.create_task(hub.run(ready))
        try:
            await ready.wait()
            everything = hub.subscribe_all()
            server.stop()
            hub.hint("1.1")
            try:
                await asyncio.wait_for(everything.get(), timeout=10)
                told = "an event"
            except EventsMissed as missed:
                told = f"EventsMissed({missed.reason!r})"
            except TimeoutError:
                told = "nothing within 10 s"
            server.start()
            conn = await asyncpg.connect(server.dsn)
            try:
                job_id = await job(conn, JobState.RUNNING)
                await conn.execute(
                    "INSERT INTO job_events (job_id, seq, kind, data) VALUES ($1, 1, 'log', '{}')", job_id
                )
            finally:
                await conn.close()
            fresh = hub.subscribe_job(job_id)
            event = await asyncio.wait_for(fresh.get(), timeout=30)
        finally:
            await hub.stop()
            await running
            await pool.close()
    print(f"\nafter a failed read the /ws/events subscriber got: {told}")
    assert told.startswith("EventsMissed")
    assert "read" in told
    assert (event.job_id, event.seq) == (job_id, 1)


async def test_an_all_events_subscriber_that_falls_behind_is_told_and_a_jobs_subscriber_is_not(
    engine: Engine, db: asyncpg.Connection
) -> None:
    job_id = await long_history(db, 50)
    hub = EventHub(engine.pool, buffer=10)  # a hub of its own, hinted by the test
    ready = asyncio.Event()
    running = asyncio.create_task(hub.run(ready))
    try:
        await ready.wait()
        everything = hub.subscribe_all()
        one_job = hub.subscribe_job(job_id)
        hub.hint(",".join(f"{job_id}.{seq}" for seq in range(1, 51)))  # 50 events, room for 10
        try:
            await asyncio.wait_for(everything.get(), timeout=10)
            told = "an event"
        except EventsMissed as missed:
            told = f"EventsMissed({missed.reason!r})"
        seqs = [(await asyncio.wait_for(one_job.get(), timeout=10)).seq for _ in range(50)]
    finally:
        await hub.stop()
        await running
    print(f"\n50 events, buffers of 10: /ws/events subscriber got {told}; the job's got {len(seqs)} in order")
    assert told == "EventsMissed('fell behind')"
    assert seqs == list(range(1, 51))


async def test_an_event_the_decoder_cannot_read_is_delivered_and_the_hub_survives(
    settings: Settings, registry: Any, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    job_id = await job(db, JobState.SUCCEEDED)
    await db.execute(
        """
        INSERT INTO job_events (job_id, seq, kind, data) VALUES
            ($1, 1, 'log', '{"message": "fine"}'),
            ($1, 2, 'log', '{"message": "huge", "fields": {"n": 1e400}}'),
            ($1, 3, 'state', '{"state": "succeeded", "previous": "running", "attempt": 1}')
        """,
        job_id,
    )
    await db.execute("UPDATE jobs SET event_seq = 3 WHERE id = $1", job_id)
    async with live_app(settings, registry) as (base, engine):
        async with http.ws_connect(ws_url(base, f"/ws/jobs/{job_id}"), max_msg_size=0) as ws:
            try:
                messages, code, _ = await read_until_closed(ws, timeout=10)
            except TimeoutError:
                messages, code = [], None
        async with http.get(f"{base}/jobs/{job_id}/events") as response:
            history_status, history = response.status, await response.text()
        healthy = engine.healthy
        async with http.get(f"{base}/health") as response:
            health = response.status
    print(
        f"\nan event with 1e400 in it: {len(messages) - 1} events, close {code}, engine healthy {healthy};"
        f" GET /jobs/{{id}}/events {history_status}"
    )
    assert [e["seq"] for e in messages[1:]] == [1, 2, 3]
    assert code == 1000
    assert healthy
    assert health == 200
    assert history_status == 200, history
    assert [e["seq"] for e in json.loads(history)["items"]] == [1, 2, 3]


def _scanned(plan: dict[str, Any], relation: str) -> tuple[int, set[str]]:
    """Rows the plan's scans of ``relation`` (or its partitions) returned (all loops), and the kinds
    of those scans."""
    rows, kinds = 0, set()
    name = plan.get("Relation Name") or ""
    if name == relation or name.startswith(f"{relation}_"):  # or a partition of it (0028)
        rows += int(plan["Actual Rows"] * plan["Actual Loops"])
        kinds.add(plan["Node Type"])
    for child in plan.get("Plans", ()):
        child_rows, child_kinds = _scanned(child, relation)
        rows, kinds = rows + child_rows, kinds | child_kinds
    return rows, kinds


@pytest.mark.parametrize("plan_cache_mode", ["force_generic_plan", "force_custom_plan"])
async def test_a_page_read_scans_only_its_page_of_a_long_history(
    db: asyncpg.Connection, plan_cache_mode: str
) -> None:
    from skiplock.queue._statements import EVENTS

    job_id = await long_history(db, 20_000)
    await db.execute("ANALYZE job_events")
    await db.execute(f"SET plan_cache_mode = {plan_cache_mode}")
    explain = await db.prepare(f"EXPLAIN (ANALYZE, FORMAT JSON) {EVENTS.event_since_many}")
    for _ in range(6):  # past the five custom plans after which PostgreSQL may choose a generic one
        (result,) = await explain.fetchval([job_id, job_id], [0, 19_800], [500, 500])
    rows, kinds = _scanned(result["Plan"], "job_events")
    print(f"\n{plan_cache_mode}: reads after 0 and after 19,800, 500 each: {rows} rows scanned by {kinds}")
    assert rows <= 700  # 500 + 200: never the 20,000 a read without a limit scans
    assert kinds == {"Index Scan"}


async def test_a_jobs_history_reads_in_pages_through_the_client(
    engine: Engine, db: asyncpg.Connection
) -> None:
    job_id = await long_history(db, 250)
    other = await long_history(db, 3)  # another job's events never come with this one's
    seqs: list[int] = []
    after, pages = 0, 0
    while page := await engine.client.events(job_id, after=after, limit=100):
        assert {e.job_id for e in page} == {job_id}
        seqs += [e.seq for e in page]
        after, pages = page[-1].seq, pages + 1
    assert (seqs, pages) == (list(range(1, 251)), 3)
    last = (await engine.client.events(job_id, after=249, limit=100))[0]
    assert (last.kind, last.data["state"], last.is_final) == ("state", "succeeded", True)
    assert orjson.loads(last.json)["data"] == last.data
    assert [e.seq for e in await engine.client.events(other)] == [1, 2, 3]
    assert await engine.client.events(987654321) == []
