"""Headless Chromium against a real ``skiplock serve``: the browser, the server, and waiting.

Needs Debian's ``chromium`` and ``chromium-driver``; the browser test modules skip without them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.support.live import free_port
from tests.support.workers import spawn, stop_worker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = (
    "browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
)
#: Every host name but the loopback one fails to resolve: a page that needs a CDN breaks.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def chrome(*extra: str) -> WebDriver:
    """A headless Chromium that keeps its console log (``get_log("browser")``)."""
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
        *extra,
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """What the page logged at SEVERE since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[no-untyped-call]


@contextmanager
def serving(dsn: str, **settings: str) -> Iterator[httpx.Client]:
    """``skiplock serve`` on a free port with a worker; an HTTP client bound to it."""
    port = free_port()
    process = spawn(dsn, "serve", "--port", str(port), stderr_to=None, **settings)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
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
    finally:
        client.close()
        stop_worker(process)


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


def enqueue(server: httpx.Client, **body: Any) -> dict[str, Any]:
    response = server.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
