"""/health (the process answers) and /ready (database reachable, migrations current, services up)."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from skiplock.api.plugin import EngineDep
from skiplock.api.schemas import Health, error_responses
from skiplock.api.security import PUBLIC_ROUTE
from skiplock.db.migrate import is_current
from skiplock.db.pool import DB_UNAVAILABLE_OR_TIMEOUT

#: The longest /ready takes: a probe must get an answer (503) even from a database that hangs.
READY_TIMEOUT_S = 2.0


@get(
    "/health",
    operation_id="Health",
    summary="Liveness",
    tags=["health"],
    opt=PUBLIC_ROUTE,
    responses={
        **error_responses(public=True, database=False),
        HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
            Health, description="A service died: restart the process.", generate_examples=False
        ),
    },
)
async def health(engine: EngineDep) -> Response[Health]:
    """Liveness: 200 while the process serves and every engine service runs; 503 naming each
    service that died (the process is half-alive: an orchestrator should restart it)."""
    if failures := engine.failures:
        return Response(
            Health(status="failed", checks=dict.fromkeys(failures, False)),
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
        )
    return Response(Health(status="ok"), status_code=HTTP_200_OK)


@get(
    "/ready",
    operation_id="Ready",
    summary="Readiness",
    tags=["health"],
    opt=PUBLIC_ROUTE,
    responses={
        **error_responses(public=True, database=False),
        HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
            Health,
            description="The database does not answer, migrations are behind, or a service died.",
            generate_examples=False,
        ),
    },
)
async def ready(engine: EngineDep) -> Response[Health]:
    """Readiness: 200 when the database answers, migrations are current and services run; else 503.
    Asks the database afresh each time (a connection broken by a restart is replaced), within
    READY_TIMEOUT_S."""
    checks = {"database": False, "migrations": False, "services": engine.healthy}
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), engine.pool.acquire() as conn:
            checks["migrations"] = await is_current(conn)
            checks["database"] = True
    except DB_UNAVAILABLE_OR_TIMEOUT:
        pass
    ok = all(checks.values())
    return Response(
        Health(status="ready" if ok else "unavailable", checks=checks),
        status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE,
    )
