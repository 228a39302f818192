"""fetch_api and scrape end to end: the real app and engine against a local upstream server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import make_settings
from tests.integration.test_api import assert_error, wait_for_state
from tests.support.live import app_client
from tests.support.upstream import HUGE_TOTAL, POSTS, Upstream, upstream_server
from tests.support.waiting import wait_until

Client = AsyncTestClient[Any]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[Client]:
    """The local upstream is on 127.0.0.1, so these tests allow private addresses."""
    async with app_client(
        make_settings(dsn, fetch_allow_private=True, fetch_max_bytes=1024 * 1024)
    ) as client:
        yield client


@pytest.fixture
async def guarded_api(dsn: str) -> AsyncIterator[Client]:
    """Default policy: loopback and private addresses refused."""
    async with app_client(make_settings(dsn)) as client:
        yield client


async def run_job(api: Client, task: str, args: dict[str, Any], state: str, **options: Any) -> dict[str, Any]:
    response = await api.post("/jobs", json={"task": task, "args": args, **options})
    assert response.status_code == 201, response.text
    return await wait_for_state(api, response.json()["id"], state)


# fetch_api


async def test_sync_fetch_inserts_then_updates_records(api: Client, upstream: Upstream) -> None:
    body = {"url": upstream.url("/posts"), "source": "posts"}
    first = await api.post("/fetch", params={"mode": "sync"}, json=body)
    assert first.status_code == 200, first.text
    assert first.json() | {"url": None} == {
        "source": "posts",
        "url": None,
        "fetched": 3,
        "inserted": 2,
        "updated": 0,
        "skipped": 1,
    }
    again = (await api.post("/fetch", params={"mode": "sync"}, json=body)).json()
    assert (again["inserted"], again["updated"]) == (0, 2)
    page = (await api.get("/records", params={"source": "posts"})).json()
    assert [(r["external_id"], r["payload"]) for r in page["items"]] == [("1", POSTS[0]), ("2", POSTS[1])]
    assert page["next_cursor"] is None


async def test_records_are_paged_by_cursor(api: Client, upstream: Upstream) -> None:
    for source in ("a", "b"):
        body = {"url": upstream.url("/posts"), "source": source}
        assert (await api.post("/fetch", params={"mode": "sync"}, json=body)).status_code == 200
    first = (await api.get("/records", params={"limit": 3})).json()
    assert [(r["source"], r["external_id"]) for r in first["items"]] == [("a", "1"), ("a", "2"), ("b", "1")]
    rest = (await api.get("/records", params={"limit": 3, "cursor": first["next_cursor"]})).json()
    assert [(r["source"], r["external_id"]) for r in rest["items"]] == [("b", "2")]
    assert rest["next_cursor"] is None
    assert_error(await api.get("/records", params={"cursor": "x"}), 400, "cursor")
    assert_error(await api.get("/records", params={"limit": 0}), 400, "limit")


async def test_items_under_a_key_and_a_single_object(api: Client, upstream: Upstream) -> None:
    wrapped = {"url": upstream.url("/wrapped"), "source": "w", "items_key": "data"}
    result = (await api.post("/fetch", params={"mode": "sync"}, json=wrapped)).json()
    assert (result["fetched"], result["inserted"]) == (2, 2)
    single = {"url": upstream.url("/single"), "source": "s"}
    result = (await api.post("/fetch", params={"mode": "sync"}, json=single)).json()
    assert (result["fetched"], result["inserted"]) == (1, 1)
    missing = {"url": upstream.url("/wrapped"), "source": "w", "items_key": "nope"}
    assert_error(await api.post("/fetch", params={"mode": "sync"}, json=missing), 502, "'nope'")


async def test_fetch_as_a_task_stores_and_reports(
    api: Client, upstream: Upstream, db: asyncpg.Connection
) -> None:
    response = await api.post("/fetch", json={"url": upstream.url("/posts"), "source": "t"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["task"], job["args"]["source"]) == ("fetch_api", "t")
    done = await wait_for_state(api, job["id"], "succeeded")
    assert done["result"]["inserted"] == 2
    assert await db.fetchval("SELECT count(*) FROM records WHERE source = 't'") == 2


async def test_a_5xx_is_retried_and_then_succeeds(api: Client, upstream: Upstream) -> None:
    done = await run_job(api, "fetch_api", {"url": upstream.url("/flaky/k1"), "source": "f"}, "succeeded")
    assert done["attempts"] == 2
    assert "500" in done["errors"][0]["message"]
    assert upstream.hits["k1"] == 2


@pytest.mark.parametrize(
    ("path", "words"),
    [("/status/404", ["404"]), ("/text", ["did not return JSON", "text/plain"])],
)
async def test_a_4xx_or_non_json_answer_fails_at_once(
    api: Client, upstream: Upstream, path: str, words: list[str]
) -> None:
    done = await run_job(api, "fetch_api", {"url": upstream.url(path), "source": "x"}, "failed")
    assert done["attempts"] == 1
    assert done["max_attempts"] == 5
    for word in words:
        assert word in done["errors"][-1]["message"]
    sync = await api.post("/fetch", params={"mode": "sync"}, json={"url": upstream.url(path), "source": "x"})
    assert_error(sync, 502, *words)


async def test_a_slow_upstream_times_out(api: Client, upstream: Upstream) -> None:
    body = {"url": upstream.url("/slow"), "source": "slow", "timeout_s": 0.3}
    assert_error(await api.post("/fetch", params={"mode": "sync"}, json=body), 504, "0.3s")
    done = await run_job(api, "fetch_api", body, "failed", max_attempts=1)
    assert "no complete answer within 0.3s" in done["errors"][-1]["message"]


async def test_a_body_over_the_cap_stops_the_download(api: Client, upstream: Upstream) -> None:
    done = await run_job(api, "fetch_api", {"url": upstream.url("/huge"), "source": "h"}, "failed")
    assert "larger than SKIPLOCK_FETCH_MAX_BYTES (1048576 bytes)" in done["errors"][-1]["message"]
    assert done["attempts"] == 1
    await wait_until(upstream.huge_done.is_set)
    assert upstream.huge_sent < HUGE_TOTAL / 2  # the client hung up long before the end


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"url": "ftp://example.org/x", "source": "x"}, ["url", "http"]),
        ({"url": "not a url", "source": "x"}, ["url"]),
        ({"url": "http://example.org", "source": ""}, ["source"]),
        ({"url": "http://example.org", "source": "x", "timeout_s": 0}, ["timeout_s"]),
        ({"url": "http://example.org", "source": "x", "surprise": 1}, ["surprise"]),
    ],
)
async def test_bad_fetch_arguments_are_422(
    api: Client, args: dict[str, Any], words: list[str], db: asyncpg.Connection
) -> None:
    assert_error(await api.post("/jobs", json={"task": "fetch_api", "args": args}), 422, *words)
    for mode in ("sync", "task"):
        assert_error(await api.post("/fetch", params={"mode": mode}, json=args), 422, *words)
    assert_error(await api.post("/fetch", params={"mode": "later"}, json=args), 422, "mode")
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


# The address policy


async def test_loopback_is_refused_by_default(guarded_api: Client, upstream: Upstream) -> None:
    body = {"url": upstream.url("/posts"), "source": "p"}
    assert_error(await guarded_api.post("/fetch", params={"mode": "sync"}, json=body), 422, "loopback")
    done = await run_job(guarded_api, "fetch_api", body, "failed")
    assert done["attempts"] == 1
    assert "127.0.0.1 is a loopback address" in done["errors"][-1]["message"]
    scraped = await run_job(guarded_api, "scrape", {"url": upstream.url("/html/index")}, "failed")
    assert "loopback" in scraped["errors"][-1]["message"]
    assert upstream.requests == 0


async def test_a_name_resolving_to_loopback_is_refused(guarded_api: Client, upstream: Upstream) -> None:
    body = {"url": upstream.url("/posts").replace("127.0.0.1", "localhost"), "source": "p"}
    assert_error(await guarded_api.post("/fetch", params={"mode": "sync"}, json=body), 422, "localhost")


async def test_the_policy_is_checked_again_on_every_redirect(dsn: str, upstream: Upstream) -> None:
    # 127.0.0.1 is allow-listed; its redirect to "localhost" (the same server) is not.
    async with app_client(make_settings(dsn, fetch_allow_hosts=["127.0.0.1"])) as api:
        ok = await run_job(api, "scrape", {"url": upstream.url("/html/index")}, "succeeded")
        assert ok["result"]["title"] == "The index"
        refused = await run_job(api, "scrape", {"url": upstream.url("/to-localhost")}, "failed")
        assert "refused to fetch from localhost" in refused["errors"][-1]["message"]


# scrape


async def test_scrape_stores_the_page_after_redirects(api: Client, upstream: Upstream) -> None:
    url = upstream.url("/redirect/2")
    done = await run_job(api, "scrape", {"url": url}, "succeeded")
    assert done["result"] | {"url": None, "final_url": None} == {
        "url": None,
        "final_url": None,
        "status": 200,
        "title": "The index",
        "headings": 3,
        "links": 3,
    }
    page = (await api.get("/pages", params={"url": url})).json()
    assert page["final_url"] == upstream.url("/html/index")
    assert page["description"] == "What this page is about."
    assert page["headings"] == [
        {"level": 1, "text": "Main heading"},
        {"level": 3, "text": "Deep"},
        {"level": 2, "text": "Second"},
    ]
    assert page["links"] == [
        {"url": upstream.url("/about"), "text": "About us"},
        {"url": upstream.url("/html/about"), "text": "Relative"},
        {"url": "https://example.org/x?q=1", "text": "Elsewhere"},
    ]


async def test_rescraping_updates_the_one_row(
    api: Client, upstream: Upstream, db: asyncpg.Connection
) -> None:
    url = upstream.url("/html/index")
    await run_job(api, "scrape", {"url": url}, "succeeded")
    first = await db.fetchval("SELECT scraped_at FROM pages WHERE url = $1", url)
    await run_job(api, "scrape", {"url": url}, "succeeded")
    rows = await db.fetch("SELECT scraped_at FROM pages")
    assert len(rows) == 1
    assert rows[0]["scraped_at"] > first


async def test_too_many_redirects_and_non_html_fail_at_once(api: Client, upstream: Upstream) -> None:
    many = await run_job(api, "scrape", {"url": upstream.url("/redirect/6")}, "failed")
    assert "more than 5 redirects" in many["errors"][-1]["message"]
    assert many["attempts"] == 1
    five = await run_job(api, "scrape", {"url": upstream.url("/redirect/5")}, "succeeded")
    assert five["result"]["final_url"] == upstream.url("/html/index")
    image = await run_job(api, "scrape", {"url": upstream.url("/image")}, "failed")
    assert "not an HTML page (image/png)" in image["errors"][-1]["message"]
    assert image["attempts"] == 1


async def test_unknown_page_is_404_and_url_is_required(api: Client) -> None:
    assert_error(await api.get("/pages", params={"url": "http://nowhere.example/"}), 404, "nowhere")
    assert_error(await api.get("/pages"), 400, "url")


async def test_request_headers_go_to_the_urls_own_origin_only(api: Client, upstream: Upstream) -> None:
    sent = {"Authorization": "Bearer partner-secret", "X-Tenant": "t1"}

    async def payload(path: str) -> dict[str, Any]:
        body = {"url": upstream.url(path), "source": path, "headers": sent}
        assert (await api.post("/fetch", params={"mode": "sync"}, json=body)).status_code == 200
        records = (await api.get("/records", params={"source": path})).json()["items"]
        result: dict[str, Any] = records[0]["payload"]
        return result

    assert await payload("/headers") == {"id": 1, **sent}
    assert await payload("/headers-here") == {"id": 1, **sent}  # a redirect on the same origin
    # 127.0.0.1 → localhost is another origin: the secret must not follow the redirect.
    assert await payload("/headers-elsewhere") == {"id": 1, "Authorization": None, "X-Tenant": None}


async def test_a_malformed_redirect_fails_clearly(api: Client, upstream: Upstream) -> None:
    body = {"url": upstream.url("/bad-redirect"), "source": "b"}
    assert_error(await api.post("/fetch", params={"mode": "sync"}, json=body), 502, "malformed URL")
    done = await run_job(api, "fetch_api", body, "failed")
    assert done["attempts"] == 1
