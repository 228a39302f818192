"""examples/fastapi_app through FastAPI's TestClient, on a database of the testing kit's: an order
and its job commit together (a refused order leaves no job), the kit's drain runs the job, and the
status route shows its state, progress and result."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from examples.fastapi_app.app import app
from examples.fastapi_app.tasks import prepare_order
from skiplock.queue import TaskRegistry
from skiplock.testing import Kit


@pytest.fixture
def skiplock_registry() -> TaskRegistry:
    return TaskRegistry([prepare_order])


async def test_an_order_enqueues_in_its_transaction_and_its_status_shows_progress(
    skiplock_kit: Kit, skiplock_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", skiplock_dsn)  # what skiplock.connect() in its lifespan reads
    with TestClient(app) as http:
        placed = http.post("/orders", json={"item": "book", "quantity": 2, "coupon": "WELCOME"})
        assert placed.status_code == 201, placed.text
        order = placed.json()
        [job] = await skiplock_kit.assert_enqueued(prepare_order, {"order_id": order["order_id"]})
        assert job.id == order["job_id"]

        assert http.post("/orders", json={"item": "pen", "quantity": 0}).status_code == 422
        reused = http.post("/orders", json={"item": "pen", "quantity": 1, "coupon": "WELCOME"})
        assert reused.status_code == 409  # refused after its job was enqueued: the job went with it
        assert await skiplock_kit.client.pool.fetchval("SELECT count(*) FROM orders") == 1
        await skiplock_kit.assert_enqueued(prepare_order, count=1)
        assert await skiplock_kit.client.pool.fetchval("SELECT count(*) FROM jobs") == 1

        before = http.get(f"/orders/{order['order_id']}").json()
        assert (before["status"], before["job_state"], before["progress"]) == ("new", "queued", None)

        drained = await skiplock_kit.drain()
        assert [j.state for j in drained.of(prepare_order)] == ["succeeded"]

        after = http.get(f"/orders/{order['order_id']}").json()
        assert (after["status"], after["job_state"]) == ("prepared", "succeeded")
        assert after["progress"]["fraction"] == 1.0
        assert after["progress"]["message"] == "print label"
        assert after["result"] == {"order_id": order["order_id"], "label": f"ORDER-{order['order_id']:06d}"}
        assert http.get("/orders/999").status_code == 404
