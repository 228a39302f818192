"""The dashboard's pages and actions in headless Chromium, offline: one ``skiplock serve`` and one
browser for the whole module (each test uses queues of its own), a browser that resolves no host
but 127.0.0.1, so a page that needs a CDN fails here. Every test fails on a console error."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from skiplock.db import connect
from skiplock.db.admin import create_database, drop_database
from tests.conftest import TEMPLATE
from tests.support.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    MISSING,
    OFFLINE,
    chrome,
    console_errors,
    enqueue,
    eventually,
    serving,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING)]

QUEUES = "default,retrying"


@pytest.fixture(scope="module")
async def module_dsn(pg_admin_dsn: str, template_dsn: str) -> AsyncIterator[str]:
    name = f"dashboard_browser_{os.getpid()}"
    yield await create_database(pg_admin_dsn, name, template=TEMPLATE)
    await drop_database(pg_admin_dsn, name)


@pytest.fixture(scope="module")
def server(module_dsn: str) -> Iterator[httpx.Client]:
    with serving(module_dsn, QUEUES=QUEUES, PROGRESS_INTERVAL_S="0.05", SHUTDOWN_GRACE_S="1") as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chrome(OFFLINE)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver, server: httpx.Client) -> Iterator[WebDriver]:
    """The browser at the desktop size, failing the test on a console error."""
    browser.set_window_size(1280, 860)
    console_errors(browser)
    yield browser
    errors = console_errors(browser)
    browser.get("about:blank")
    assert errors == []


def rows(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """The query's rows, read with a connection of its own (the tests here are not coroutines)."""

    async def read() -> list[asyncpg.Record]:
        conn = await connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(read())


def assert_only_local(page: WebDriver, server: httpx.Client) -> None:
    """Everything the page loaded came from the server under test."""
    loaded = page.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded
    assert all(url.startswith(f"{server.base_url}/") for url in loaded), loaded


def job_state(server: httpx.Client, job_id: int) -> str:
    state: str = server.get(f"/jobs/{job_id}").json()["state"]
    return state


def test_retry_on_failures_queues_the_group_again(
    page: WebDriver, server: httpx.Client, module_dsn: str
) -> None:
    ids = [
        enqueue(server, task="echo", args={"fail": True}, queue="retrying", max_attempts=1)["id"]
        for _ in range(3)
    ]
    eventually(lambda: all(job_state(server, i) == "failed" for i in ids))
    assert server.post("/queues/retrying/pause").status_code == 200  # so that they stay queued
    page.get(f"{server.base_url}/ui/failures")
    assert page.title == "Failures · skiplock"
    assert page.find_element(By.TAG_NAME, "header").location["y"] == 0  # nothing above the navigation
    button = page.find_element(By.XPATH, "//tr[td/a[text()='echo']]//button[@data-action='retry-group']")
    assert button.text == "Retry 3"
    button.click()
    eventually(lambda: page.find_element(By.ID, "flash").text == "Queued 3 jobs again.")
    assert not button.is_enabled()
    found = rows(module_dsn, "SELECT id, state::text, max_attempts FROM jobs WHERE id = ANY($1)", ids)
    assert sorted((r["id"], r["state"], r["max_attempts"]) for r in found) == [(i, "queued", 2) for i in ids]
    server.post("/queues/retrying/resume")


def test_swagger_ui_and_redoc_render_the_api_offline(page: WebDriver, server: httpx.Client) -> None:
    page.get(f"{server.base_url}/schema/swagger")
    operations = eventually(lambda: page.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    assert "/jobs/{job_id}" in {o.get_attribute("data-path") for o in operations}
    assert_only_local(page, server)
    page.get(f"{server.base_url}/schema/redoc")
    eventually(lambda: page.find_elements(By.CSS_SELECTOR, '[data-item-id="tag/jobs/operation/EnqueueJob"]'))
    assert_only_local(page, server)
