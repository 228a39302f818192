"""The dashboard's charts in a real headless Chromium against a real ``skiplock serve``: inline SVG
on the overview and a queue page, for the hour and the day, drawn from the rollup, coloured by the
theme (light and dark), no console errors (skipped without Chromium, as test_browser)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
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


def finished(server: httpx.Client, queue: str | None = None) -> int:
    params = {"window": "1h", **({"queue": queue} if queue else {})}
    response = server.get("/stats/series", params=params)
    assert response.status_code == 200, response.text
    return sum(p["succeeded"] + p["failed"] for p in response.json()["points"])


# An hour of another queue's minutes, as the rollup writes them: the picture has something to show.
HOUR = """
INSERT INTO job_stats_minutes (queue, minute, succeeded, failed, cancelled, wait_buckets, wait_counts, queued)
SELECT 'reports', date_trunc('minute', now()) - make_interval(mins => m), 30 + (m * 7) % 25,
       (m % 9 = 0)::int * 4, (m % 13 = 0)::int,
       ARRAY[30 + m % 3, 36, 44 + (m % 11 = 0)::int * 6]::smallint[], '{20,8,2}',
       40 + (m * 13) % 60
FROM generate_series(1, 59) AS m
"""


async def seed_hour(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(HOUR)
    finally:
        await conn.close()


def bar_fill(page: WebDriver) -> str:
    fill: str = page.execute_script(
        "return getComputedStyle(document.querySelector('svg.chart rect.ok')).fill"
    )
    return fill


def test_charts_on_the_overview_and_a_queue_page(dsn: str, tmp_path: Path) -> None:
    with serving(dsn, stats_interval_s="0.3", queues="*") as server:
        jobs = [enqueue(server, task="echo", args={}) for _ in range(5)]
        jobs.append(enqueue(server, task="echo", args={}, queue="mail"))
        failing = enqueue(server, task="always_fails", args={}, max_attempts=1)
        for job in [*jobs, failing]:
            eventually(
                lambda job=job: server.get(f"/jobs/{job['id']}").json()["state"] in ("succeeded", "failed")
            )
        eventually(lambda: finished(server) == 7)
        assert finished(server, "mail") == 1
        asyncio.run(seed_hour(dsn))
        driver = chrome()
        try:
            driver.get(f"{server.base_url}/ui")
            charts = driver.find_elements(By.CSS_SELECTOR, "#charts svg.chart")
            assert len(charts) == 3
            assert driver.find_elements(By.CSS_SELECTOR, "#charts svg.chart rect.ok")  # the succeeded jobs
            assert driver.find_elements(By.CSS_SELECTOR, "#charts svg.chart rect.bad")  # the failed one
            assert driver.find_elements(By.CSS_SELECTOR, "#charts svg.chart .p50")  # their waits
            assert charts[0].size["width"] > 200
            light = bar_fill(driver)
            shots = Path(os.environ.get("SKIPLOCK_SCREENSHOT_DIR") or tmp_path)
            shots.mkdir(parents=True, exist_ok=True)
            driver.find_element(By.ID, "charts").screenshot(str(shots / "charts.png"))
            driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia",
                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
            )
            assert bar_fill(driver) != light  # the dark theme's green
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

            driver.find_element(By.CSS_SELECTOR, '#charts a[href="?window=1d"]').click()
            eventually(
                lambda: driver.find_elements(By.CSS_SELECTOR, '#charts[data-window="1d"] svg.chart rect.ok')
            )

            driver.get(f"{server.base_url}/ui/queues/mail")
            assert len(driver.find_elements(By.CSS_SELECTOR, "#charts svg.chart")) == 3
            bars = driver.find_elements(By.CSS_SELECTOR, "#charts svg.chart rect")
            assert [b.get_attribute("class") for b in bars] == ["ok"]  # mail's one job, not the others
            tip = driver.find_element(By.CSS_SELECTOR, "#charts svg.chart g title").get_attribute(
                "textContent"
            )
            assert (tip or "").endswith("1 succeeded, 0 failed, 0 cancelled")
            assert console_errors(driver) == []
        finally:
            driver.quit()
