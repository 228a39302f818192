"""A Litestar service with skiplock inside it: ``SkiplockPlugin`` runs the engine (its workers,
scheduler and listener) in the app's own lifespan, in the same process, and gives handlers the
``client`` and ``engine`` dependencies. Its routes are the app's own; skiplock's JSON API and
dashboard are not mounted here (``skiplock.app.create_app`` is the app that has them, with their
authentication).

Run it (the database is ``DATABASE_URL``, else the embedded server ``make run`` started)::

    uvicorn --factory examples.litestar_app.app:create_app
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field

import skiplock
from examples.litestar_app.tasks import Greeting, greet
from skiplock.api import ClientDep, SkiplockPlugin
from skiplock.errors import ConfigError, JobNotFound
from skiplock.queue import Engine, TaskRegistry


class GreetingIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class GreetingOut(BaseModel):
    job_id: int
    state: skiplock.JobState
    result: Any = None


@post("/greetings", status_code=202)
async def ask_for_greeting(data: JSONBody[GreetingIn], client: ClientDep) -> GreetingOut:
    """Enqueued on the engine's own pool; a worker of this same process runs it."""
    job = await client.enqueue(greet.name, Greeting(name=data.name))
    return GreetingOut(job_id=job.id, state=job.state)


@get("/greetings/{job_id:int}")
async def greeting(job_id: FromPath[int], client: ClientDep) -> GreetingOut:
    """The greeting job's state, and its result once it succeeded."""
    try:
        job = await client.get(job_id)
    except JobNotFound as exc:
        raise NotFoundException(f"no greeting {job_id}") from exc
    if job.task != greet.name:
        raise NotFoundException(f"no greeting {job_id}")
    return GreetingOut(job_id=job.id, state=job.state, result=job.result)


def create_app(settings: skiplock.Settings | None = None) -> Litestar:
    """The app, with an engine that runs only this app's task (``settings`` from the environment,
    SKIPLOCK_* and DATABASE_URL, when not given)."""
    settings = settings or skiplock.Settings.load()
    if not settings.database_url:
        raise ConfigError("set DATABASE_URL to the database skiplock keeps its jobs in")
    engine = Engine(settings, TaskRegistry([greet]), settings.database_url)
    return Litestar([ask_for_greeting, greeting], plugins=[SkiplockPlugin(engine)])
