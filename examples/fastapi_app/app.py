"""A FastAPI service beside skiplock: it enqueues in its own transaction (the order and its job
commit together, or neither does) and serves the job's status and progress.

Run it (the database is ``DATABASE_URL``, else the embedded server ``make run`` started), with a
worker for its task::

    SKIPLOCK_TASK_MODULES=examples.fastapi_app.tasks skiplock worker &
    uvicorn examples.fastapi_app.app:app
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

import skiplock
from examples.fastapi_app.tasks import PrepareOrder, prepare_order

ORDERS = """
CREATE TABLE IF NOT EXISTS orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item text NOT NULL,
    quantity int NOT NULL CHECK (quantity > 0),
    status text NOT NULL DEFAULT 'new',
    job_id bigint
);
CREATE TABLE IF NOT EXISTS coupon_uses (code text PRIMARY KEY, order_id bigint NOT NULL)
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with skiplock.connect() as client:  # one client (and pool) for the process
        await client.pool.execute(ORDERS)
        app.state.skiplock = client
        yield


app = FastAPI(title="orders", lifespan=lifespan)


def get_client(request: Request) -> skiplock.Client:
    client: skiplock.Client = request.app.state.skiplock
    return client


Jobs = Annotated[skiplock.Client, Depends(get_client)]


class OrderIn(BaseModel):
    item: str = Field(min_length=1)
    quantity: int
    coupon: str | None = Field(default=None, description="Each coupon is good for one order.")


class OrderOut(BaseModel):
    order_id: int
    job_id: int


class OrderStatus(BaseModel):
    order_id: int
    status: str
    job_state: skiplock.JobState
    progress: dict[str, Any] | None
    result: Any


@app.post("/orders", status_code=201)
async def place_order(order: OrderIn, client: Jobs) -> OrderOut:
    """The order, its job and its coupon in one transaction: an order refused at any point, even
    after its job was enqueued (a coupon used already), leaves neither row nor job behind."""
    async with client.pool.acquire() as conn, conn.transaction():
        try:
            order_id = await conn.fetchval(
                "INSERT INTO orders (item, quantity) VALUES ($1, $2) RETURNING id", order.item, order.quantity
            )
        except asyncpg.CheckViolationError as exc:
            raise HTTPException(422, "quantity must be positive") from exc
        job = await client.enqueue(prepare_order.name, PrepareOrder(order_id=order_id), conn=conn)
        await conn.execute("UPDATE orders SET job_id = $1 WHERE id = $2", job.id, order_id)
        if order.coupon is not None:
            try:
                await conn.execute("INSERT INTO coupon_uses VALUES ($1, $2)", order.coupon, order_id)
            except asyncpg.UniqueViolationError as exc:  # the job above goes with the rollback
                raise HTTPException(409, f"coupon {order.coupon!r} has been used") from exc
    return OrderOut(order_id=order_id, job_id=job.id)


@app.get("/orders/{order_id}")
async def order_status(order_id: int, client: Jobs) -> OrderStatus:
    """The order with its job's state, latest progress and result."""
    row = await client.pool.fetchrow("SELECT status, job_id FROM orders WHERE id = $1", order_id)
    if row is None:
        raise HTTPException(404, f"no order {order_id}")
    job = await client.get(row["job_id"])
    return OrderStatus(
        order_id=order_id, status=row["status"], job_state=job.state, progress=job.progress, result=job.result
    )
