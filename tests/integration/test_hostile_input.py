"""Values PostgreSQL cannot store (NUL, lone surrogates, bytes that are not UTF-8), through the engine
and through HTTP: nothing answers 5xx, every job ends final, what is read back is the stored form
(each NUL and each lone surrogate replaced by U+FFFD), and no other job is held up."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from multidict import CIMultiDict, CIMultiDictProxy

from skiplock.fetcher import Fetched
from skiplock.queue import Engine
from skiplock.settings import Settings
from skiplock.tasks.fetch_api import keyed_items, list_records, store_records
from skiplock.tasks.scrape import Heading, Link, PageMeta, get_page, store_page
from tests.support.live import live_server
from tests.support.waiting import wait_until

Client = AsyncTestClient[Any]

#: Text with what PostgreSQL refuses mixed in: NUL, lone surrogates (high and low).
HOSTILE_CHARS = st.one_of(
    st.characters(),
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc80", "\udfff", "\ufffd"]),
    st.characters(categories=["Cs"]),
)
UNSTORABLE = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc80", "\udfff"])
#: Half the examples hold at least one character PostgreSQL cannot store, whatever hypothesis draws.
HOSTILE_TEXT = st.one_of(
    st.text(HOSTILE_CHARS, max_size=12),
    st.builds(
        lambda a, bad, b: a + bad + b, st.text(max_size=5), UNSTORABLE, st.text(HOSTILE_CHARS, max_size=5)
    ),
)
EXAMPLES = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FINAL = ("succeeded", "failed", "cancelled")


def stored(text: str) -> str:
    """What the service keeps of ``text``: NUL and every lone surrogate as U+FFFD."""
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


def plain(value: Any) -> bool:
    """No NUL and no surrogate anywhere in a JSON value read back."""
    if isinstance(value, str):
        return stored(value) == value
    if isinstance(value, dict):
        return all(plain(k) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return True


async def final_job(engine: Engine, job_id: int, timeout: float = 15) -> Any:
    async def done() -> Any:
        job = await engine.client.get(job_id)
        return job if job.state in FINAL else None

    return await wait_until(done, timeout)


@given(text=HOSTILE_TEXT, raw=st.binary(max_size=8), echo=HOSTILE_TEXT)
@EXAMPLES
async def test_engine_stores_hostile_args_results_logs_progress_and_errors(
    engine: Engine, db: asyncpg.Connection, text: str, raw: bytes, echo: str
) -> None:
    args = {"codepoints": [ord(c) for c in text], "raw": raw.hex(), "echo": echo}
    ok = await engine.client.enqueue("hostile", args)
    bad = await engine.client.enqueue("hostile", {**args, "raises": True})
    built = stored(text + raw.decode("utf-8", "surrogateescape"))

    done = await final_job(engine, ok.id)
    assert done.state == "succeeded", done.errors
    assert done.args["echo"] == stored(echo)
    assert done.result == [built, stored(echo), {built: built}]
    assert done.progress is not None
    assert done.progress["message"] == built
    logs = await db.fetch("SELECT data FROM job_events WHERE job_id = $1 AND kind = 'log'", ok.id)
    assert [r["data"]["message"] for r in logs] == [built]
    assert logs[0]["data"]["fields"] == {"value": built, "k" + built: 1}

    failed = await final_job(engine, bad.id)
    assert failed.state == "failed"
    assert failed.errors[-1].message == "boom:" + built
    assert failed.errors[-1].traceback is not None
    assert plain(failed.errors[-1].traceback)


@given(text=HOSTILE_TEXT)
@EXAMPLES
async def test_records_and_pages_store_hostile_values(engine: Engine, text: str) -> None:
    """What fetch_api and scrape write: an upstream's ids, payloads, titles, headings and links."""
    source = "s" + text
    items = [{"id": "k" + text, "v": text, text: [text]}, {"id": "k" + stored(text), "v": "later"}]
    keyed, skipped = keyed_items(items, "id")
    assert skipped == 0
    await store_records(engine.pool, source, keyed)  # two ids the same once stored: one record
    records = await list_records(engine.pool, stored(source), 0, 10)
    assert [(r.external_id, r.payload["v"]) for r in records] == [("k" + stored(text), "later")]

    url = "https://example.org/" + text
    meta = PageMeta(
        title=text,
        description=text,
        headings=[Heading(level=1, text=text)],
        links=[Link(url=url, text=text)],
    )
    answer = Fetched(url, 200, CIMultiDictProxy(CIMultiDict({"content-type": "text/html"})), b"", 0)
    await store_page(engine.pool, url, answer, meta)
    page = await get_page(engine.pool, stored(url))
    assert page is not None
    assert (page.final_url, page.title, page.description) == (stored(url), stored(text), stored(text))
    assert page.headings == [Heading(level=1, text=stored(text))]
    assert page.links == [Link(url=stored(url), text=stored(text))]


async def test_csv_with_nul_bytes_fails_alone_and_other_jobs_finish_promptly(api: Client) -> None:
    """The issue's headline: one NUL in an upload made the import's error carry it, and every
    completion in the process stalled behind it."""
    header_nul = b"sku,na\x00me,price,quantity\nA,x,1,1\n"
    cell_nul = b"sku,name,price,quantity\nA,x\x00y,1,1\nB,ok,2,2\n\xff\xfe,bad,3,3\n"
    imports = []
    for body in (header_nul, cell_nul):
        response = await api.post("/imports", content=body, headers={"content-type": "text/csv"})
        assert response.status_code == 202, response.text
        imports.append(response.json())
    others = [(await api.post("/jobs", json={"task": "noop"})).json()["id"] for _ in range(20)]

    async def job_states(ids: list[int]) -> list[str]:
        return [(await api.get(f"/jobs/{i}")).json()["state"] for i in ids]

    await wait_until(lambda: _all_final(job_states(others)), timeout=15)
    assert set(await job_states(others)) == {"succeeded"}

    async def final_import(import_id: int) -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/imports/{import_id}")).json()
        return body if body["state"] in FINAL else None

    header_import = await wait_until(lambda: final_import(imports[0]["import_id"]), timeout=15)
    assert header_import["state"] == "failed"
    assert "\x00" not in header_import["error"]
    assert "header row" in header_import["error"]
    header_job = await wait_until(lambda: _final_body(api, imports[0]["job"]["id"]), timeout=15)
    assert header_job["state"] == "failed"
    assert header_job["attempts"] == 1
    assert plain(header_job["errors"])

    cell_import = await wait_until(lambda: final_import(imports[1]["import_id"]), timeout=15)
    assert (cell_import["state"], cell_import["loaded"], cell_import["failed"]) == ("succeeded", 1, 2)
    rows = (await api.get(f"/imports/{imports[1]['import_id']}/failed-rows")).json()["items"]
    assert [r["reason"] for r in rows] == ["bad encoding: NUL character", "bad encoding: not UTF-8"]
    assert all(plain(r) for r in rows)


async def _all_final(states: Any) -> bool:
    return all(s in FINAL for s in await states)


async def _final_body(api: Client, job_id: int) -> dict[str, Any] | None:
    body: dict[str, Any] = (await api.get(f"/jobs/{job_id}")).json()
    return body if body["state"] in FINAL else None


def json_bytes(value: Any) -> bytes:
    """JSON as a client may send it: NUL and lone surrogates as \\u escapes."""
    return json.dumps(value).encode()


def query(text: str) -> str:
    """``text`` percent-encoded as UTF-8, lone surrogates as their (invalid) three-byte forms."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@given(text=HOSTILE_TEXT, raw=st.binary(min_size=1, max_size=6))
@EXAMPLES
async def test_http_answers_hostile_input_with_4xx_never_5xx(api: Client, text: str, raw: bytes) -> None:
    seen: list[tuple[str, int]] = []

    async def send(label: str, method: str, url: str, body: bytes | None = None, **headers: str) -> Any:
        response = await api.request(
            method, url, content=body, headers={"content-type": "application/json", **headers}
        )
        seen.append((label, response.status_code))
        assert response.status_code < 500, (label, response.status_code, response.text)
        return response

    q = query(text)
    for path in (
        "/jobs?task=",
        "/records?source=",
        "/pages?url=",
        "/imports?cursor=",
        "/jobs/1/events?after=",
    ):
        await send(path, "GET", path + q)
    job = {"task": "hostile", "args": {"echo": text}}
    await send("POST /jobs", "POST", "/jobs", json_bytes(job))
    await send("POST /jobs batch", "POST", "/jobs/batch", json_bytes([job, job]))
    ndjson = b"\n".join([json_bytes(job), json_bytes({"task": text})])
    await send("POST /jobs ndjson", "POST", "/jobs/batch", ndjson, **{"content-type": "application/x-ndjson"})
    schedule = {"name": text or "s", "cron": "0 3 * * *", "task": "hostile", "args": {"echo": text}}
    await send("POST /schedules", "POST", "/schedules", json_bytes(schedule))
    fetch = {"url": "http://127.0.0.1:9/", "source": text or "s"}
    await send("POST /fetch", "POST", "/fetch?mode=task", json_bytes(fetch))
    # Bytes that are not UTF-8 inside a JSON string.
    broken = b'{"task": "hostile", "args": {"echo": "' + raw + b'"}}'
    await send("POST /jobs raw", "POST", "/jobs", broken)
    await send("POST /schedules raw", "POST", "/schedules", broken)
    csv = b"sku,name,price,quantity\nA," + raw + text.encode("utf-8", "surrogatepass") + b",1,1\n"
    form = (
        b'--b\r\ncontent-disposition: form-data; name="file"; filename="'
        + raw.replace(b'"', b"")
        + b'"\r\ncontent-type: text/csv\r\n\r\n'
        + csv
        + b"\r\n--b--\r\n"
    )
    await send(
        "POST /imports multipart",
        "POST",
        "/imports",
        form,
        **{"content-type": "multipart/form-data; boundary=b"},
    )
    await send("POST /imports csv", "POST", "/imports?filename=" + q, csv, **{"content-type": "text/csv"})


async def test_nul_in_a_query_or_path_value_is_a_400(api: Client) -> None:
    for url in ("/jobs?task=%00", "/records?source=a%00", "/pages?url=%00", "/queues/a%00b/pause"):
        method = "POST" if url.endswith("pause") else "GET"
        response = await api.request(method, url)
        assert response.status_code == 400, (url, response.status_code, response.text)
        assert "NUL" in response.json()["detail"]
        assert response.headers.get("x-request-id")  # answered inside the request-id middleware


@pytest.mark.parametrize("path", ["/jobs", "/schedules", "/fetch", "/jobs/batch"])
async def test_json_nested_too_deep_or_not_utf8_is_a_400(api: Client, path: str) -> None:
    deep = b'{"task": "noop", "args": {"a": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    if path == "/jobs/batch":
        deep = b"[" + deep + b"]"
    response = await api.post(path, content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "deeper than" in response.json()["detail"]
    response = await api.post(path, content=b'{"task": "\xff"}', headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("path", ["/jobs", "/schedules", "/jobs/batch"])
async def test_nul_in_a_json_body_is_a_422_naming_the_field(api: Client, path: str) -> None:
    body: Any = {"task": "hostile", "args": {"echo": "a\x00b"}}
    if path == "/schedules":
        body = {"name": "n", "cron": "0 3 * * *", **body}
    if path == "/jobs/batch":
        body = [body]
    response = await api.post(path, content=json_bytes(body), headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "args.echo" in response.text


async def test_nul_in_a_websocket_query_closes_it_as_bad_input(settings: Settings, registry: Any) -> None:
    async with live_server(settings, list(registry)) as base, aiohttp.ClientSession() as http:
        url = base.replace("http", "ws", 1) + "/ws/events?task=a%00b"
        try:
            async with http.ws_connect(url) as ws:
                await ws.receive(timeout=10)
                code = ws.close_code
        except aiohttp.WSServerHandshakeError as exc:
            code = exc.status
        assert code == 4400, code
        async with http.get(f"{base}/health") as health:  # the server is fine
            assert health.status == 200
