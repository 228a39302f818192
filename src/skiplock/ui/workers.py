"""The dashboard's Workers page: every process with its state, heartbeat, running jobs, queues and
limits, and quiet / resume / stop buttons (the page's script calls /workers/{id}/…)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.exceptions import NotAuthorizedException
from litestar.params import QueryParameter
from litestar.response import Template

from skiplock.api import ClientDep, needs
from skiplock.auth import Scope
from skiplock.ui.pages import to_login

#: Running jobs linked per worker; the rest are counted.
MAX_LINKS = 20


def seconds(value: float) -> str:
    """A heartbeat's age, shortly: "0.4s", "12s", "3m"."""
    if value < 10:
        return f"{max(value, 0):.1f}s"
    if value < 120:
        return f"{value:.0f}s"
    return f"{value // 60:.0f}m"


class WorkersPage(Controller):
    path = "/ui/workers"
    include_in_schema = False
    opt = needs(Scope.JOBS_READ)
    exception_handlers = {NotAuthorizedException: to_login}

    @get("/")
    async def workers(
        self,
        client: ClientDep,
        fragment: Annotated[bool, QueryParameter(description="Only the workers table.")] = False,
    ) -> Template:
        """The fleet, newest boot first."""
        workers = await client.workers.all()
        context: dict[str, object] = {
            "workers": workers,
            "seconds": seconds,
            "max_links": MAX_LINKS,
        }
        if fragment:
            return Template(template_name="_workers.html.j2", context=context)
        counts = await client.workers.counts()
        offline = sum(1 for w in workers if w.state == "offline")
        context.update(online=len(workers) - offline, offline=offline, held_by_offline=counts.held_by_offline)
        return Template(template_name="workers.html.j2", context=context)
