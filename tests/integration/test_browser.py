"""The dashboard in a real headless Chromium against a real ``skiplock serve``.

Needs Debian's ``chromium`` and ``chromium-driver``; without them every test here is skipped and
the run's header says so (``.ci/run`` installs both, so CI always runs them). Screenshots go to
``SKIPLOCK_SCREENSHOT_DIR`` when set (``docs/`` for the README's pictures), else to a temp dir.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

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


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chrome()
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver, server: httpx.Client) -> Iterator[WebDriver]:
    """The browser, failing the test if a page logged an error to the console (checked, and the
    page left, while the server still runs: its going away is not the page's error)."""
    console_errors(browser)  # drop what earlier tests left
    yield browser
    errors = console_errors(browser)
    browser.get("about:blank")
    assert errors == []


@pytest.fixture
def server(dsn: str) -> Iterator[httpx.Client]:
    """``skiplock serve`` on a free port with a worker; an HTTP client bound to it."""
    with serving(dsn, PROGRESS_INTERVAL_S="0.05") as client:
        yield client


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SKIPLOCK_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def cell(driver: WebDriver, queue: str, state: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, f'tr[data-queue="{queue}"] td[data-state="{state}"]')
    return found[0].text if found else ""


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


# The dashboard's state colours as a browser computes a node's fill (app.css).
FILLS = {
    "waiting": "rgb(255, 255, 255)",
    "running": "rgb(219, 234, 254)",
    "succeeded": "rgb(220, 252, 231)",
    "failed": "rgb(254, 226, 226)",
    "cancelled": "rgb(243, 244, 246)",
}


def start_workflow(server: httpx.Client, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    response = server.post("/workflows", json={"steps": steps, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def step_states(server: httpx.Client, workflow_id: int) -> dict[str, str]:
    return {s["name"]: s["state"] for s in server.get(f"/workflows/{workflow_id}").json()["steps"]}


def fill(driver: WebDriver, step: str) -> str:
    """The computed fill of a step's node in the drawn DAG."""
    script = "return getComputedStyle(document.querySelector(arguments[0])).fill"
    value: str = driver.execute_script(script, f'#dag a.node[data-step="{step}"] rect')
    return value


def fills(driver: WebDriver, *steps: str) -> tuple[str, ...]:
    return tuple(fill(driver, step) for step in steps)


def test_workflow_page_draws_its_dag_coloured_by_state_with_nodes_linked_to_jobs(
    page: WebDriver, server: httpx.Client, shots: Path
) -> None:
    created = start_workflow(
        server,
        [
            {"name": "fetch", "task": "echo"},
            {"name": "resize", "task": "sleep", "args": {"seconds": 60, "steps": 60}, "after": ["fetch"]},
            {"name": "scan", "task": "echo", "after": ["fetch"]},
            {"name": "publish", "task": "echo", "after": ["resize", "scan"]},
        ],
        name="thumbnails",
    )
    jobs = {s["name"]: s["job_id"] for s in created["steps"]}
    eventually(lambda: step_states(server, created["id"])["resize"] == "running")
    eventually(lambda: step_states(server, created["id"])["scan"] == "succeeded")
    page.get(f"{server.base_url}/ui/workflows/{created['id']}")
    nodes = page.find_elements(By.CSS_SELECTOR, "#dag a.node")
    assert sorted(n.get_dom_attribute("data-step") for n in nodes) == sorted(jobs)
    edges = page.find_elements(By.CSS_SELECTOR, "#dag path.edge")
    assert sorted((e.get_dom_attribute("data-from"), e.get_dom_attribute("data-to")) for e in edges) == [
        ("fetch", "resize"),
        ("fetch", "scan"),
        ("resize", "publish"),
        ("scan", "publish"),
    ]
    assert all(e.get_dom_attribute("marker-end") == "url(#arrow)" for e in edges)
    assert fills(page, "fetch", "resize", "scan", "publish") == (
        FILLS["succeeded"],
        FILLS["running"],
        FILLS["succeeded"],
        FILLS["waiting"],
    )
    # Left to right by layer: fetch, then resize and scan side by side, then publish.
    x = {n.get_dom_attribute("data-step"): n.find_element(By.TAG_NAME, "rect").rect["x"] for n in nodes}
    assert x["fetch"] < x["resize"] == x["scan"] < x["publish"]
    assert page.find_element(By.ID, "wf-progress").text.startswith("2 of 4 steps finished")
    assert page.find_element(By.ID, "wf-cancel").is_enabled()
    assert not page.find_element(By.ID, "wf-retry").is_enabled()
    screenshot(page, shots / "workflow.png")
    link = page.find_element(By.CSS_SELECTOR, '#dag a.node[data-step="resize"]')
    assert link.get_dom_attribute("href") == f"/ui/jobs/{jobs['resize']}"
    link.click()
    eventually(lambda: page.find_element(By.TAG_NAME, "h1").text.startswith(f"Job {jobs['resize']} running"))
    assert (
        page.find_element(By.ID, "workflow-link").get_dom_attribute("href")
        == f"/ui/workflows/{created['id']}"
    )


def test_a_node_is_recoloured_live_when_its_step_finishes(page: WebDriver, server: httpx.Client) -> None:
    created = start_workflow(
        server,
        [
            {"name": "first", "task": "sleep", "args": {"seconds": 2, "steps": 4}},
            {"name": "second", "task": "echo", "after": ["first"]},
        ],
    )
    page.get(f"{server.base_url}/ui/workflows/{created['id']}")
    eventually(lambda: page.find_element(By.ID, "live").get_attribute("class") == "live on")
    page.execute_script("window.notReloaded = true")
    assert fill(page, "first") in (FILLS["running"], "rgb(229, 231, 235)")  # running, or still queued
    assert fill(page, "second") == FILLS["waiting"]
    eventually(lambda: fill(page, "first") == FILLS["running"])
    eventually(lambda: fills(page, "first", "second") == (FILLS["succeeded"],) * 2, timeout=20)
    eventually(lambda: page.find_element(By.ID, "wf-state").text == "succeeded")
    assert page.find_element(By.ID, "wf-progress").text.startswith("2 of 2 steps finished (2 succeeded")
    assert page.execute_script("return window.notReloaded") is True


def test_cancel_button_cancels_a_running_workflow(page: WebDriver, server: httpx.Client) -> None:
    created = start_workflow(
        server,
        [
            {"name": "wait", "task": "sleep", "args": {"seconds": 60, "steps": 60}},
            {"name": "then", "task": "echo", "after": ["wait"]},
        ],
    )
    page.get(f"{server.base_url}/ui/workflows/{created['id']}")
    eventually(lambda: fill(page, "wait") == FILLS["running"])
    page.find_element(By.ID, "wf-cancel").click()
    eventually(lambda: page.find_element(By.ID, "wf-state").text == "cancelled")
    eventually(lambda: fills(page, "wait", "then") == (FILLS["cancelled"],) * 2, timeout=20)
    assert server.get(f"/workflows/{created['id']}").json()["state"] == "cancelled"
    assert step_states(server, created["id"]) == {"wait": "cancelled", "then": "cancelled"}
    eventually(lambda: page.find_element(By.ID, "wf-retry").is_enabled())
    assert not page.find_element(By.ID, "wf-cancel").is_enabled()


async def _set_args(dsn: str, workflow_id: int, step: str, args: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE jobs SET args = $3::jsonb WHERE workflow_id = $1 AND step = $2", workflow_id, step, args
        )
    finally:
        await conn.close()


def test_retry_button_runs_a_failed_workflow_again(page: WebDriver, server: httpx.Client, dsn: str) -> None:
    created = start_workflow(
        server,
        [
            {"name": "boom", "task": "sleep", "args": {"seconds": 0, "fail": True}, "max_attempts": 1},
            {"name": "after", "task": "echo", "after": ["boom"]},
        ],
    )
    eventually(lambda: server.get(f"/workflows/{created['id']}").json()["finished_at"])
    page.get(f"{server.base_url}/ui/workflows/{created['id']}")
    assert page.find_element(By.ID, "wf-state").text == "failed"
    assert fills(page, "boom", "after") == (FILLS["failed"], FILLS["cancelled"])
    assert not page.find_element(By.ID, "wf-cancel").is_enabled()
    eventually(lambda: page.find_element(By.ID, "live").get_attribute("class") == "live on")
    asyncio.run(_set_args(dsn, created["id"], "boom", '{"seconds": 0.5}'))  # it succeeds this time
    page.find_element(By.ID, "wf-retry").click()
    eventually(lambda: fills(page, "boom", "after") == (FILLS["succeeded"],) * 2, timeout=20)
    eventually(lambda: page.find_element(By.ID, "wf-state").text == "succeeded")
    assert page.find_element(By.ID, "wf-progress").text.startswith("2 of 2 steps finished (2 succeeded")
    assert step_states(server, created["id"]) == {"boom": "succeeded", "after": "succeeded"}
    assert not page.find_element(By.ID, "wf-retry").is_enabled()
