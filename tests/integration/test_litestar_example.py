"""examples/litestar_app: skiplock inside a Litestar app of one's own (SkiplockPlugin), its engine
running in the app's lifespan: a job enqueued by the app's route is run by the same process's
worker, and the app's status route shows its result."""

from __future__ import annotations

import asyncio

from litestar.testing import AsyncTestClient

from examples.litestar_app.app import create_app
from skiplock.api import SkiplockPlugin
from tests.conftest import make_settings


async def test_the_apps_own_route_enqueues_and_its_worker_in_the_same_process_runs_it(dsn: str) -> None:
    app = create_app(make_settings(dsn))
    async with AsyncTestClient(app) as http:
        asked = await http.post("/greetings", json={"name": "Ada"})
        assert asked.status_code == 202, asked.text
        job_id = asked.json()["job_id"]
        assert asked.json()["state"] == "queued"
        for _ in range(200):  # the engine claims it in this process (no other worker runs)
            answer = (await http.get(f"/greetings/{job_id}")).json()
            if answer["state"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert answer == {"job_id": job_id, "state": "succeeded", "result": "Hello, Ada!"}
        engine = app.plugins.get(SkiplockPlugin).engine
        assert "greet" in engine.registry
        assert (await http.post("/greetings", json={"name": ""})).status_code == 400
        assert (await http.get("/greetings/999999")).status_code == 404
