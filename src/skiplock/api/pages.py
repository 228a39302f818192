"""/pages: what scrape stored about a page."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import Parameter

from skiplock.api.openapi import NEEDS_KEY
from skiplock.api.plugin import EngineDep
from skiplock.api.schemas import error_responses
from skiplock.api.security import needs
from skiplock.auth import Scope
from skiplock.errors import NotFoundError
from skiplock.tasks.scrape import Page, get_page


@get(
    "/pages",
    operation_id="GetPage",
    summary="Get a scraped page",
    tags=["scrape"],
    opt=needs(Scope.JOBS_READ),
    security=NEEDS_KEY,
    responses=error_responses(e404="No scrape job for this exact URL has succeeded."),
)
async def page(
    engine: EngineDep,
    url: Annotated[str, Parameter(min_length=1, max_length=4000, description="The URL scraped.")],
) -> Page:
    """A scraped page's metadata; 404 until a scrape job for that exact URL has succeeded."""
    found = await get_page(engine.pool, url)
    if found is None:
        raise NotFoundError(f"no page scraped for {url[:200]!r}", url=url[:200])
    return found
