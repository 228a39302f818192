"""The dashboard's actions (bulk actions, the schedule form, run again) in headless Chromium
against a real ``skiplock serve``: one server and one browser for the module, offline (no host but
127.0.0.1), each test failing on a console error. Jobs meant to stay queued go to a queue the
server does not serve."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from skiplock.db.admin import create_database, drop_database
from tests.conftest import TEMPLATE
from tests.support.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    MISSING,
    OFFLINE,
    chrome,
    console_errors,
    eventually,
    serving,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING)]

#: Served by nobody: its jobs stay queued.
PARKED = "parked"


@pytest.fixture(scope="module")
async def module_dsn(pg_admin_dsn: str, template_dsn: str) -> AsyncIterator[str]:
    name = f"actions_browser_{os.getpid()}"
    yield await create_database(pg_admin_dsn, name, template=TEMPLATE)
    await drop_database(pg_admin_dsn, name)


@pytest.fixture(scope="module")
def server(module_dsn: str) -> Iterator[httpx.Client]:
    with serving(module_dsn, QUEUES="default", PROGRESS_INTERVAL_S="0.05", SHUTDOWN_GRACE_S="1") as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chrome(OFFLINE)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver, server: httpx.Client) -> Iterator[WebDriver]:
    console_errors(browser)
    yield browser
    errors = console_errors(browser)
    browser.get("about:blank")
    assert errors == []


@pytest.fixture
def shots() -> Path | None:
    """Where the README's pictures of these pages go: only when asked (``SKIPLOCK_SCREENSHOT_DIR``)."""
    directory = os.environ.get("SKIPLOCK_SCREENSHOT_DIR")
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory)


def pick(page: WebDriver, job_id: int) -> bool:
    page.find_element(By.CSS_SELECTOR, f'input.bulk-pick[value="{job_id}"]').click()
    return True


def test_bulk_cancel_by_filter_asks_with_the_count_and_cancels_every_match(
    page: WebDriver, server: httpx.Client, shots: Path | None
) -> None:
    jobs = [{"task": "sleep", "args": {"seconds": 1}, "queue": PARKED} for _ in range(30)]
    assert server.post("/jobs/batch", json=jobs).status_code == 201
    other = server.post("/jobs", json={"task": "echo", "args": {}, "queue": "other"}).json()
    page.get(f"{server.base_url}/ui/jobs?queue={PARKED}&state=queued")
    eventually(lambda: len(page.find_elements(By.CSS_SELECTOR, "tr[data-job]")) == 30)
    page.find_element(By.ID, "bulk-matching").click()
    alert = eventually(lambda: page.switch_to.alert)
    assert alert.text == "Cancel 30 jobs matching the filter?"
    alert.accept()
    eventually(lambda: page.find_element(By.ID, "bulk-status").get_attribute("data-state"), timeout=15)
    status = page.find_element(By.ID, "bulk-status").text
    assert "cancel of 30 jobs" in status
    assert "100% (succeeded): 30 done, 0 skipped" in status
    listed = server.get("/jobs", params={"queue": PARKED, "limit": 100}).json()["items"]
    assert {j["state"] for j in listed} == {"cancelled"}
    assert server.get(f"/jobs/{other['id']}").json()["state"] == "queued"
    if shots is not None:  # the picture: three of a queue's jobs ticked and cancelled
        fresh = [{"task": "sleep", "args": {"seconds": 1}, "queue": PARKED} for _ in range(6)]
        ids = server.post("/jobs/batch", json=fresh).json()["ids"]
        page.get(f"{server.base_url}/ui/jobs?queue={PARKED}")
        for job_id in ids[:3]:
            eventually(lambda job_id=job_id: pick(page, job_id))
        page.find_element(By.ID, "bulk-selected").click()
        eventually(lambda: page.switch_to.alert).accept()
        eventually(lambda: page.find_element(By.ID, "bulk-status").get_attribute("data-state"), timeout=15)
        eventually(lambda: len(page.find_elements(By.CSS_SELECTOR, "tr[data-job] .state.cancelled")) == 33)
        page.save_screenshot(str(shots / "bulk.png"))


def test_bulk_cancel_of_selected_jobs_keeps_the_selection_across_live_renders(
    page: WebDriver, server: httpx.Client
) -> None:
    ids = [
        server.post("/jobs", json={"task": "echo", "args": {}, "queue": "picked"}).json()["id"]
        for _ in range(3)
    ]
    page.get(f"{server.base_url}/ui/jobs?queue=picked")
    eventually(lambda: len(page.find_elements(By.CSS_SELECTOR, "tr[data-job]")) == 3)
    for job_id in ids[:2]:  # the live list may re-render under the click: again on a stale row
        eventually(lambda job_id=job_id: pick(page, job_id))
    # A new job re-renders the live list; the picks stay.
    server.post("/jobs", json={"task": "echo", "args": {}, "queue": "picked"})
    eventually(lambda: len(page.find_elements(By.CSS_SELECTOR, "tr[data-job]")) == 4)
    assert page.find_element(By.ID, "bulk-selected").text == "the selected (2)"
    eventually(lambda: page.find_element(By.CSS_SELECTOR, f'input.bulk-pick[value="{ids[0]}"]').is_selected())
    page.find_element(By.ID, "bulk-selected").click()
    alert = eventually(lambda: page.switch_to.alert)
    assert alert.text == "Cancel 2 selected jobs?"
    alert.accept()
    eventually(lambda: page.find_element(By.ID, "bulk-status").get_attribute("data-state"), timeout=15)
    states = [server.get(f"/jobs/{i}").json()["state"] for i in ids]
    assert states == ["cancelled", "cancelled", "queued"]


def upcoming(page: WebDriver) -> int:
    return len(page.find_elements(By.CSS_SELECTOR, "#schedule-upcoming li"))


def test_schedule_form_previews_fire_times_creates_a_schedule_that_fires_and_edits_it(
    page: WebDriver, server: httpx.Client, shots: Path | None
) -> None:
    page.get(f"{server.base_url}/ui/schedules")
    page.find_element(By.ID, "schedule-name").send_keys("every-two-seconds")
    cron = page.find_element(By.ID, "schedule-cron")
    cron.send_keys("61 * * * *")
    preview = page.find_element(By.ID, "schedule-preview")
    eventually(lambda: "cron:" in preview.text)
    cron.clear()
    cron.send_keys("*/2 * * * * *")
    eventually(lambda: upcoming(page) == 5)
    Select(page.find_element(By.ID, "schedule-task")).select_by_value("echo")
    assert (
        page.find_element(By.CSS_SELECTOR, '#schedule-args input[name="fail"]').get_attribute("type")
        == "checkbox"
    )
    page.find_element(By.ID, "schedule-extra").send_keys('{"greeting": "hi"}')
    if shots is not None:
        page.save_screenshot(str(shots / "schedules.png"))
    page.find_element(By.ID, "schedule-save").click()
    eventually(
        lambda: page.find_elements(By.XPATH, "//table[@class='schedules']//td[text()='every-two-seconds']")
    )
    (schedule,) = [s for s in server.get("/schedules").json() if s["name"] == "every-two-seconds"]
    assert (schedule["cron"], schedule["task"], schedule["enabled"]) == ("*/2 * * * * *", "echo", True)

    def fired() -> list[dict[str, object]]:
        items: list[dict[str, object]] = server.get("/jobs", params={"schedule_id": schedule["id"]}).json()[
            "items"
        ]
        return items

    (job, *_) = eventually(fired, timeout=10)
    assert job["args"] == {"fail": False, "greeting": "hi"}

    page.find_element(
        By.CSS_SELECTOR, f'button[data-action="edit"][data-schedule="{schedule["id"]}"]'
    ).click()
    eventually(lambda: page.find_element(By.ID, "schedule-cron").get_attribute("value") == "*/2 * * * * *")
    assert page.find_element(By.ID, "schedule-extra").get_attribute("value") == '{"greeting":"hi"}'
    cron.clear()
    cron.send_keys("0 4 * * *")
    page.find_element(By.ID, "schedule-enabled").click()
    page.find_element(By.ID, "schedule-save").click()
    eventually(lambda: server.get(f"/schedules/{schedule['id']}").json()["cron"] == "0 4 * * *")
    changed = server.get(f"/schedules/{schedule['id']}").json()
    assert (changed["enabled"], changed["args"]) == (False, {"fail": False, "greeting": "hi"})
