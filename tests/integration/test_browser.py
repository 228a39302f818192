"""The dashboard in a real headless Chromium against a real ``skiplock serve``.

Needs Debian's ``chromium`` and ``chromium-driver``; without them every test here is skipped and
the run's header says so (``.ci/run`` installs both, so CI always runs them). Screenshots go to
``SKIPLOCK_SCREENSHOT_DIR`` when set (``docs/`` for the README's pictures), else to a temp dir.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.support.live import free_port
from tests.support.workers import spawn, stop_worker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = (
    "browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING)]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # this machine's closed network refuses its calls home
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,860",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver, server: httpx.Client) -> Iterator[WebDriver]:
    """The browser, failing the test if a page logged an error to the console (checked, and the
    page left, while the server still runs: its going away is not the page's error)."""
    browser.get_log("browser")  # type: ignore[no-untyped-call]  # drop what earlier tests left
    yield browser
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]  # type: ignore[no-untyped-call]
    browser.get("about:blank")
    assert errors == []


@pytest.fixture
def server(dsn: str) -> Iterator[httpx.Client]:
    """``skiplock serve`` on a free port with a worker; an HTTP client bound to it."""
    port = free_port()
    process = spawn(dsn, "serve", "--port", str(port), PROGRESS_INTERVAL_S="0.05")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.get("/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, "skiplock serve exited"
        assert time.monotonic() < deadline, "skiplock serve did not get ready"
        time.sleep(0.1)
    yield client
    client.close()
    stop_worker(process)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SKIPLOCK_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def eventually(check: Any, timeout: float = 15) -> Any:
    """Poll ``check`` (a function of nothing) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except WebDriverException:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout}s: {check}"
        time.sleep(0.05)


def cell(driver: WebDriver, queue: str, state: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, f'tr[data-queue="{queue}"] td[data-state="{state}"]')
    return found[0].text if found else ""


def enqueue(server: httpx.Client, **body: Any) -> dict[str, Any]:
    response = server.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def screenshot(driver: WebDriver, path: Path) -> None:
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overview_counts_change_as_jobs_are_enqueued(
    page: WebDriver, server: httpx.Client, shots: Path
) -> None:
    page.get(f"{server.base_url}/ui")
    eventually(lambda: page.find_element(By.ID, "live").get_attribute("class") == "live on")
    assert cell(page, "reports", "queued") == ""
    for _ in range(3):  # nobody serves "reports": they stay queued
        enqueue(server, task="sleep", args={"seconds": 1}, queue="reports")
    eventually(lambda: cell(page, "reports", "queued") == "3")
    enqueue(server, task="sleep", args={"seconds": 1}, queue="reports")
    eventually(lambda: cell(page, "reports", "queued") == "4")
    enqueue(server, task="sleep", args={"seconds": 30, "steps": 30})
    eventually(lambda: cell(page, "default", "running") == "1")
    page.find_element(By.CSS_SELECTOR, 'button[data-action="pause"][data-queue="reports"]').click()
    eventually(lambda: page.find_elements(By.CSS_SELECTOR, 'tr.paused[data-queue="reports"]'))
    assert next(q for q in server.get("/queues").json() if q["name"] == "reports")["paused"] is True
    screenshot(page, shots / "overview.png")


def test_job_page_follows_progress_to_the_end(page: WebDriver, server: httpx.Client, shots: Path) -> None:
    job = enqueue(server, task="sleep", args={"seconds": 3, "steps": 12})
    page.get(f"{server.base_url}/ui/jobs/{job['id']}")

    def bar() -> float:
        style = page.find_element(By.ID, "bar").get_attribute("style")
        assert style is not None
        return float(style.split(":")[1].strip(" %;"))

    eventually(lambda: page.find_element(By.ID, "job-state").text == "running")
    eventually(lambda: 0 < bar() < 100)
    first = bar()
    eventually(lambda: bar() > first)
    rows = len(page.find_elements(By.CSS_SELECTOR, "#events tr"))
    eventually(lambda: len(page.find_elements(By.CSS_SELECTOR, "#events tr")) > rows)
    screenshot(page, shots / "job.png")
    eventually(lambda: page.find_element(By.ID, "job-state").text == "succeeded", timeout=20)
    eventually(lambda: bar() == 100)
    assert '"slept": 3' in page.find_element(By.ID, "result").text
    kinds = [row.get_attribute("data-kind") for row in page.find_elements(By.CSS_SELECTOR, "#events tr")]
    assert kinds.count("progress") >= 2
    assert kinds[-1] == "state"


def test_cancel_button_cancels_a_running_job(page: WebDriver, server: httpx.Client) -> None:
    job = enqueue(server, task="sleep", args={"seconds": 60, "steps": 60})
    page.get(f"{server.base_url}/ui/jobs/{job['id']}")
    eventually(lambda: page.find_element(By.ID, "job-state").text == "running")
    page.find_element(By.ID, "cancel").click()
    eventually(lambda: page.find_element(By.ID, "job-state").text == "cancelled", timeout=20)
    assert server.get(f"/jobs/{job['id']}").json()["state"] == "cancelled"
    assert page.find_element(By.ID, "retry").is_enabled()


def test_enqueue_form_creates_a_job(page: WebDriver, server: httpx.Client) -> None:
    page.get(f"{server.base_url}/ui/enqueue")
    Select(page.find_element(By.ID, "task")).select_by_value("sleep")
    seconds = page.find_element(By.CSS_SELECTOR, '#args input[name="seconds"]')
    seconds.send_keys("0.2")
    page.find_element(By.CSS_SELECTOR, '#args input[name="steps"]').clear()
    page.find_element(By.CSS_SELECTOR, '#args input[name="steps"]').send_keys("2")
    page.find_element(By.CSS_SELECTOR, "#enqueue-form button[type=submit]").click()
    link = eventually(lambda: page.find_element(By.ID, "created-link"))
    job_id = int(link.text.split()[-1])
    created = server.get(f"/jobs/{job_id}").json()
    assert (created["task"], created["args"]["seconds"], created["args"]["steps"]) == ("sleep", 0.2, 2)
    link.click()
    eventually(lambda: page.find_element(By.ID, "job-state").text == "succeeded")
