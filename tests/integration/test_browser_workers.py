"""The dashboard's Workers page in a real headless Chromium against a real ``skiplock serve``
(the fixtures, and the skip without Chromium, are test_browser's)."""

from __future__ import annotations

import time
from collections.abc import Iterator

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


def test_quiet_button_stops_the_worker_claiming_until_resumed(page: WebDriver, server: httpx.Client) -> None:
    page.get(f"{server.base_url}/ui/workers")
    row = 'tr[data-worker][data-state="{}"]'
    eventually(lambda: page.find_elements(By.CSS_SELECTOR, row.format("online")))
    (worker,) = server.get("/workers").json()
    page.find_element(By.CSS_SELECTOR, f'button[data-action="quiet"][data-worker="{worker["id"]}"]').click()
    eventually(lambda: page.find_elements(By.CSS_SELECTOR, row.format("quiet")), timeout=5)
    assert server.get(f"/workers/{worker['id']}").json()["state"] == "quiet"
    job = enqueue(server, task="echo", args={})
    time.sleep(1.5)  # the quiet worker's polls and the enqueue's notification: nothing claimed
    assert server.get(f"/jobs/{job['id']}").json()["state"] == "queued"
    page.find_element(By.CSS_SELECTOR, f'button[data-action="resume"][data-worker="{worker["id"]}"]').click()
    eventually(lambda: server.get(f"/jobs/{job['id']}").json()["state"] == "succeeded", timeout=5)
    eventually(lambda: page.find_elements(By.CSS_SELECTOR, row.format("online")), timeout=5)
    links = page.find_elements(By.CSS_SELECTOR, 'tr[data-worker] a[href="/ui/jobs?queue=default"]')
    assert links  # its queues, each linked to its jobs
