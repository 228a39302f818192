"""The dashboard's Workers page in a real headless Chromium against a real ``skiplock serve``
(skipped without Chromium, as test_browser; its screenshot goes to SKIPLOCK_SCREENSHOT_DIR too)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.support.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    MISSING,
    chrome,
    console_errors,
    enqueue,
    eventually,
    serving,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING)]


@pytest.fixture
def server(dsn: str) -> Iterator[httpx.Client]:
    """``skiplock serve`` on a free port with a worker; an HTTP client bound to it."""
    with serving(dsn) as client:
        yield client


@pytest.fixture
def page(server: httpx.Client) -> Iterator[WebDriver]:
    """The browser, failing the test if a page logged an error to the console."""
    driver = chrome()
    try:
        yield driver
        errors = console_errors(driver)
        driver.get("about:blank")
        assert errors == []
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SKIPLOCK_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_quiet_button_stops_the_worker_claiming_until_resumed(
    page: WebDriver, server: httpx.Client, shots: Path
) -> None:
    running = enqueue(server, task="sleep", args={"seconds": 30, "steps": 30})
    eventually(lambda: server.get(f"/jobs/{running['id']}").json()["state"] == "running")
    page.get(f"{server.base_url}/ui/workers")
    row = 'tr[data-worker][data-state="{}"]'
    eventually(lambda: page.find_elements(By.CSS_SELECTOR, row.format("online")))
    (worker,) = server.get("/workers").json()
    page.find_element(By.CSS_SELECTOR, f'button[data-action="quiet"][data-worker="{worker["id"]}"]').click()
    eventually(lambda: page.find_elements(By.CSS_SELECTOR, row.format("quiet")), timeout=5)
    assert server.get(f"/workers/{worker['id']}").json()["state"] == "quiet"
    assert page.find_elements(By.CSS_SELECTOR, f'tr[data-worker] a[href="/ui/jobs/{running["id"]}"]')
    page.save_screenshot(str(shots / "workers.png"))
    job = enqueue(server, task="echo", args={})
    time.sleep(1.5)  # the quiet worker's polls and the enqueue's notification: nothing claimed
    assert server.get(f"/jobs/{job['id']}").json()["state"] == "queued"
    page.find_element(By.CSS_SELECTOR, f'button[data-action="resume"][data-worker="{worker["id"]}"]').click()
    eventually(lambda: server.get(f"/jobs/{job['id']}").json()["state"] == "succeeded", timeout=5)
    eventually(lambda: page.find_elements(By.CSS_SELECTOR, row.format("online")), timeout=5)
    links = page.find_elements(By.CSS_SELECTOR, 'tr[data-worker] a[href="/ui/jobs?queue=default"]')
    assert links  # its queues, each linked to its jobs
    assert server.post(f"/jobs/{running['id']}/cancel").status_code == 202  # no grace to wait at the end
