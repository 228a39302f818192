"""The dashboard's pages and actions in headless Chromium, offline: one ``skiplock serve`` and one
browser for the whole module (each test uses queues of its own), a browser that resolves no host
but 127.0.0.1, so a page that needs a CDN fails here. Every test fails on a console error."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

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
    """The browser at the desktop size in the light theme, failing the test on a console error."""
    console_errors(browser)
    yield browser
    errors = console_errors(browser)
    browser.get("about:blank")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert errors == []


@pytest.fixture
def shots(tmp_path: Path) -> Path | None:
    """Where the README's pictures of these pages go: only when asked (``SKIPLOCK_SCREENSHOT_DIR``)."""
    directory = os.environ.get("SKIPLOCK_SCREENSHOT_DIR")
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory)


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


def style(page: WebDriver, selector: str, prop: str) -> str:
    value: str = page.execute_script(
        "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]]", selector, prop
    )
    return value


RED, BLUE = "rgb(185, 28, 28)", "rgb(37, 99, 235)"  # --bad and --accent, light theme


def test_times_read_as_words_and_a_failed_jobs_bar_turns_red(page: WebDriver, server: httpx.Client) -> None:
    job = enqueue(server, task="sleep", args={"seconds": 1.5, "steps": 3, "fail": True}, max_attempts=1)
    page.get(f"{server.base_url}/ui/jobs/{job['id']}")
    eventually(lambda: page.find_element(By.ID, "job-state").text == "running")
    eventually(lambda: style(page, "#bar", "backgroundColor") == BLUE)
    created = page.find_element(By.CSS_SELECTOR, "dl.fields time")
    assert re.fullmatch(r"(now|\d+ seconds? ago)", created.text), created.text
    # The exact moment on hover, in the browser's words ("Dec 1, 2026, 07:12:03 PM UTC"), not ISO.
    assert re.match(r"[A-Z][a-z]{2} \d{1,2}, \d{4}, ", created.get_attribute("title") or "")
    eventually(lambda: page.find_element(By.ID, "job-state").text == "failed")
    eventually(lambda: style(page, "#bar", "backgroundColor") == RED)  # live, without a reload
    assert re.fullmatch(r"(now|\d+ seconds? ago)", page.find_element(By.CSS_SELECTOR, "#finished time").text)
    page.get(f"{server.base_url}/ui/jobs/{job['id']}")
    assert style(page, "#bar", "backgroundColor") == RED
    page.get(f"{server.base_url}/ui/jobs")
    # Read at once: the live list may be re-rendered between two reads.
    script = "const t = document.querySelector(arguments[0]); return [t.textContent, t.title]"
    text, title = page.execute_script(script, f'tr[data-job="{job["id"]}"] time')
    assert text.endswith("ago")
    assert title


def test_the_dark_theme_follows_the_system(page: WebDriver, server: httpx.Client) -> None:
    page.get(f"{server.base_url}/ui/jobs")
    light = style(page, ":root", "backgroundColor"), style(page, "table", "backgroundColor")
    assert light == ("rgb(250, 250, 250)", "rgb(255, 255, 255)")
    dark = {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
    page.execute_cdp_cmd("Emulation.setEmulatedMedia", dark)
    assert (style(page, ":root", "backgroundColor"), style(page, "table", "backgroundColor")) == (
        "rgb(11, 17, 32)",
        "rgb(17, 24, 39)",
    )
    assert style(page, "main", "color") == "rgb(229, 231, 235)"


def test_no_page_is_wider_than_a_phone(page: WebDriver, server: httpx.Client, shots: Path | None) -> None:
    long = "a message long enough to push a table wider than any phone " * 3
    failed = enqueue(server, task="echo", args={"fail": True, "text": long}, max_attempts=1)
    steps = [{"name": "first", "task": "echo"}, {"name": "second", "task": "echo", "after": ["first"]}]
    workflow = server.post("/workflows", json={"steps": steps, "name": "phone"}).json()
    schedule = {"name": "every-minute", "cron": "* * * * *", "task": "echo", "enabled": False}
    assert server.post("/schedules", json=schedule).status_code == 201
    eventually(lambda: job_state(server, failed["id"]) == "failed")
    page.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    page.get(f"{server.base_url}/ui")
    links = [a.get_attribute("href") for a in page.find_elements(By.CSS_SELECTOR, "header nav a")]
    pages = [h for h in links if h and h.startswith(f"{server.base_url}/ui")]
    assert len(pages) >= 6
    pages += [f"{server.base_url}/ui/jobs/{failed['id']}", f"{server.base_url}/ui/workflows/{workflow['id']}"]
    for url in pages:
        page.get(url)
        assert page.execute_script("return innerWidth") == 390
        width = page.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"{url} is {width} px wide"
    page.get(f"{server.base_url}/ui/jobs")
    script = "const t = document.querySelector('table.jobs'); return t.scrollWidth > t.clientWidth"
    assert page.execute_script(script)  # the table scrolls in its own box
    if shots is not None:
        page.save_screenshot(str(shots / "jobs-phone.png"))


def limits_of(server: httpx.Client, name: str) -> dict[str, Any]:
    queue = next(q for q in server.get("/queues").json() if q["name"] == name)
    limits: dict[str, Any] = queue["limits"]
    return limits


def test_the_queue_page_shows_and_changes_its_limits_from_the_keyboard(
    page: WebDriver, server: httpx.Client, shots: Path | None
) -> None:
    enqueue(server, task="echo", queue="limited")  # nobody serves it: it stays queued
    assert "limited" in {q["name"] for q in server.get("/queues").json()}  # a fresh read for the overview
    page.get(f"{server.base_url}/ui")
    # The overview is live (it may be re-rendered at any moment: follow the link's address).
    page.get(eventually(lambda: page.find_element(By.LINK_TEXT, "limited").get_attribute("href")))
    eventually(lambda: page.find_element(By.ID, "effective").text == "This process does not serve the queue.")
    assert page.find_element(By.CSS_SELECTOR, 'td[data-state="queued"]').text == "1"
    concurrency = page.find_element(By.ID, "limit-concurrency")
    concurrency.send_keys("3", Keys.TAB, "10", Keys.TAB, "100/minute", Keys.TAB, "2", Keys.ENTER)
    eventually(lambda: page.find_element(By.ID, "flash").text.startswith("Limits saved"))
    assert limits_of(server, "limited") == {
        "concurrency": 3,
        "global_concurrency": 10,
        "rate_limit": "100/minute",
        "key_concurrency": 2,
        "key_rate_limit": None,
    }
    # A bad rate: the field named, nothing stored.
    rate = page.find_element(By.ID, "limit-rate")
    rate.clear()
    rate.send_keys("fast", Keys.ENTER)
    eventually(lambda: "rate_limit" in page.find_element(By.ID, "flash").text)
    assert "error" in (page.find_element(By.ID, "flash").get_attribute("class") or "")
    assert [e["message"] for e in console_errors(page)] == [
        f"{server.base_url}/queues/limited - Failed to load resource: "
        "the server responded with a status of 422 (Unprocessable Entity)"
    ]
    assert limits_of(server, "limited")["rate_limit"] == "100/minute"
    # An emptied field clears its limit.
    page.find_element(By.ID, "limit-global").clear()
    rate.clear()
    rate.send_keys("5/second", Keys.ENTER)
    eventually(lambda: limits_of(server, "limited")["global_concurrency"] is None)
    assert limits_of(server, "limited")["rate_limit"] == "5/second"
    if shots is not None:
        page.save_screenshot(str(shots / "queue.png"))
    toggle = page.find_element(By.ID, "q-toggle")
    toggle.send_keys(Keys.ENTER)  # a button works from the keyboard
    eventually(lambda: toggle.text == "Resume")
    assert next(q for q in server.get("/queues").json() if q["name"] == "limited")["paused"] is True
    page.get(f"{server.base_url}/ui")
    limits = page.find_element(By.CSS_SELECTOR, 'tr[data-queue="limited"] td[data-limits]')
    assert limits.text == "3 per process, 5/second, 2 per key"


def rows_shown(page: WebDriver) -> list[int]:
    """The jobs listed, read at once (the live list may be re-rendered between two reads)."""
    script = "return [...document.querySelectorAll('tr[data-job]')].map((row) => Number(row.dataset.job))"
    shown: list[int] = page.execute_script(script)
    return shown


def test_the_jobs_list_is_live_and_searchable_with_its_filters_in_the_address(
    page: WebDriver, server: httpx.Client
) -> None:
    page.get(f"{server.base_url}/ui/jobs?task=sleep")
    eventually(lambda: page.find_element(By.ID, "live").get_attribute("class") == "live on")
    page.execute_script("window.notReloaded = true")
    started = time.monotonic()
    job = enqueue(server, task="sleep", args={"seconds": 0.5, "steps": 2})
    eventually(lambda: job["id"] in rows_shown(page), timeout=1)  # live: within a second
    print(f"appeared after {time.monotonic() - started:.2f} s")
    other = enqueue(server, task="echo", args={"customer_id": 7})
    state = f"return document.querySelector('tr[data-job=\"{job['id']}\"] .state').textContent"
    eventually(lambda: page.execute_script(state) == "succeeded")  # a changed row
    assert other["id"] not in rows_shown(page)  # the list's filter holds live too
    assert page.execute_script("return window.notReloaded") is True
    # Search by args (JSON containment) and by error text, from the form: the address keeps both.
    wanted = enqueue(server, task="echo", args={"customer_id": 42, "fail": True}, max_attempts=1)
    eventually(lambda: job_state(server, wanted["id"]) == "failed")
    page.get(f"{server.base_url}/ui/jobs")
    field = page.find_element(By.NAME, "args")
    field.send_keys('{"customer_id": 42}', Keys.ENTER)
    eventually(lambda: "args=" in page.current_url)
    assert rows_shown(page) == [wanted["id"]]
    page.find_element(By.NAME, "error").send_keys("ON PURPOSE", Keys.ENTER)
    eventually(lambda: "error=ON+PURPOSE" in page.current_url)
    assert rows_shown(page) == [wanted["id"]]
    shared = page.current_url
    page.get("about:blank")
    page.get(shared)
    assert rows_shown(page) == [wanted["id"]]
    assert page.find_element(By.NAME, "args").get_attribute("value") == '{"customer_id": 42}'
    assert page.find_element(By.ID, "searched").text.startswith("Searched jobs 1 to ")
    # By id: straight to the job's page.
    page.get(f"{server.base_url}/ui/jobs")
    page.find_element(By.NAME, "id").send_keys(str(other["id"]), Keys.ENTER)
    eventually(lambda: page.current_url == f"{server.base_url}/ui/jobs/{other['id']}")


def test_a_jobs_attempts_copy_as_json_and_run_again(page: WebDriver, server: httpx.Client) -> None:
    flaky = enqueue(server, task="fails_once", max_attempts=3)
    eventually(lambda: job_state(server, flaky["id"]) == "succeeded")
    page.get(f"{server.base_url}/ui/jobs/{flaky['id']}")
    script = """return [...document.querySelectorAll('#attempt-rows tr')].map((row) =>
        [...row.children].map((cell) => cell.querySelector('time') ? 'time' : cell.textContent))"""
    eventually(lambda: len(page.execute_script(script)) == 2)
    first, second = page.execute_script(script)
    assert first[:5] == ["1", "time", "time", first[3], "failed, retried"]
    assert re.fullmatch(r"\d+ ms|\d+\.\d s", first[3]), first[3]
    assert first[5].startswith("RuntimeError: first attempt fails")
    assert second[:5] == ["2", "time", "time", second[3], "succeeded"]
    workers = {w["id"] for w in server.get("/workers").json()}
    assert first[6] in workers
    assert second[6] in workers  # the worker that claimed each attempt
    # Copy as JSON: the job as GET /jobs/{id} answers it.
    permissions = ["clipboardReadWrite", "clipboardSanitizedWrite"]
    page.execute_cdp_cmd(
        "Browser.grantPermissions", {"origin": str(server.base_url), "permissions": permissions}
    )
    page.find_element(By.ID, "copy-json").click()
    eventually(lambda: page.find_element(By.ID, "flash").text == f"Copied job {flaky['id']} as JSON.")
    copied = page.execute_async_script("navigator.clipboard.readText().then(arguments[0])")
    assert json.loads(copied) == server.get(f"/jobs/{flaky['id']}").json()
    # Run again: the enqueue form filled in with its task, queue and args, sent as it stands.
    original = enqueue(
        server, task="echo", queue="limited", priority=7, args={"customer_id": 42, "note": "again"}
    )
    page.get(f"{server.base_url}/ui/jobs/{original['id']}")
    page.find_element(By.ID, "run-again").click()
    eventually(lambda: page.find_element(By.ID, "queue").get_attribute("value") == "limited")
    assert json.loads(page.find_element(By.ID, "extra-args").get_attribute("value") or "") == {
        "customer_id": 42,
        "note": "again",
    }
    page.find_element(By.CSS_SELECTOR, "#enqueue-form button[type=submit]").click()
    link = eventually(lambda: page.find_element(By.ID, "created-link"))
    again = server.get(f"/jobs/{int(link.text.split()[-1])}").json()
    assert (again["task"], again["queue"], again["priority"]) == ("echo", "limited", 7)
    assert again["args"] == {"customer_id": 42, "note": "again", "fail": False}
