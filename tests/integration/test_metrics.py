"""GET /metrics: job counters move when jobs run; queue depth comes from the database."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import AsyncTestClient

from tests.integration.test_api import wait_for_state

Client = AsyncTestClient[Any]


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(api: Client) -> str:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_job_counters_and_histograms_move_when_jobs_run(api: Client) -> None:
    before = await scrape(api)
    ok = (await api.post("/jobs", json={"task": "noop", "queue": "default"})).json()
    bad = (await api.post("/jobs", json={"task": "fails_permanently", "queue": "default"})).json()
    await wait_for_state(api, ok["id"], "succeeded")
    await wait_for_state(api, bad["id"], "failed")
    await api.get("/queues")  # the gauges reuse the overview, up to 5 s old: read it afresh
    after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("skiplock_jobs_enqueued_total", queue="default", task="noop") == 1
    assert moved("skiplock_jobs_started_total", queue="default", task="fails_permanently") == 1
    assert moved("skiplock_jobs_finished_total", queue="default", task="noop", outcome="succeeded") == 1
    assert (
        moved("skiplock_jobs_finished_total", queue="default", task="fails_permanently", outcome="failed")
        == 1
    )
    assert moved("skiplock_job_duration_seconds_count", queue="default", task="noop") == 1
    assert moved("skiplock_job_wait_seconds_count", queue="default") == 2
    assert sample(after, "skiplock_queue_depth", queue="default", state="succeeded") >= 1
    assert "skiplock_http_requests_total" in after  # Litestar's HTTP metrics
    assert 'path="/jobs/{job_id}"' in after  # grouped by route, not by id


async def test_queue_depth_and_oldest_age_come_from_the_database(api: Client) -> None:
    await api.post("/queues/idle/pause")
    for _ in range(3):
        await api.post("/jobs", json={"task": "noop", "queue": "idle"})
    await api.get("/queues")  # the overview the gauges reuse may be up to 5 s old: read it afresh
    text = await scrape(api)
    assert sample(text, "skiplock_queue_depth", queue="idle", state="queued") == 3
    assert sample(text, "skiplock_queue_oldest_queued_age_seconds", queue="idle") >= 0
    assert "skiplock_jobs_running" in text


async def test_http_metrics_count_each_request_by_route_method_and_status(api: Client) -> None:
    before = await scrape(api)
    assert (await api.post("/jobs", json={"task": "noop"})).status_code == 201
    assert (await api.post("/jobs", json={"task": "noop"})).status_code == 201
    assert (await api.get("/jobs/999999999")).status_code == 404
    after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    post = {"method": "POST", "path": "/jobs", "app_name": "skiplock"}
    assert moved("skiplock_http_requests_total", **post, status_code="201") == 2
    assert moved("skiplock_http_request_duration_seconds_count", **post, status_code="201") == 2
    assert sample(after, "skiplock_http_request_duration_seconds_sum", **post, status_code="201") > 0
    assert moved("skiplock_http_requests_total", method="GET", path="/jobs/{job_id}", status_code="404") == 1
    assert sample(after, "skiplock_http_requests_in_progress", **post, status_code="200") == 0
    assert moved("skiplock_http_requests_total", **post, status_code="200") == 0
    # An error series only ever for a 5xx (none here), as Litestar's own middleware records them.
    assert not re.search(r'skiplock_http_requests_error_total\{[^}]*status_code="[1-4]', after)
