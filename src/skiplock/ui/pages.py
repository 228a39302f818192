"""The dashboard's pages: rendered on the server from what the JSON API serves; live parts and
every action run in the browser against the public API and websockets."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any, get_args
from urllib.parse import quote, urlencode

import asyncpg
import orjson
from cron_descriptor import get_description
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, ValidationException
from litestar.params import Body, FromPath, Parameter, QueryParameter
from litestar.response import Redirect, Template
from markupsafe import Markup
from pydantic import BaseModel, Field

from skiplock.api import KEY_COOKIE, PUBLIC_ROUTE, AuthState, ClientDep, EngineDep, needs
from skiplock.auth import Scope
from skiplock.errors import ImportNotFound, InvalidArgumentsError, JobNotFound, WorkflowNotFound
from skiplock.queue.client import FAILURES_WINDOW, SEARCH_TIMEOUT_S, Client
from skiplock.queue.models import JobState, QueueInfo, QueueLimitsInfo
from skiplock.queue.schedules import Schedules
from skiplock.queue.stats import Window
from skiplock.queue.workers import served_by
from skiplock.queue.workflows import WorkflowInfo, WorkflowState
from skiplock.queue_names import QUEUE_NAME
from skiplock.tasks.import_csv import failed_rows, get_import, list_imports
from skiplock.ui.charts import Chart, charts
from skiplock.ui.dag import MAX_DRAWN_STEPS, NODE_HEIGHT, NODE_WIDTH, layout

#: The overview may show counts up to this old (counting a large jobs table is a scan).
OVERVIEW_MAX_AGE_S = 2.0
JOBS_PER_PAGE = 50
WORKFLOWS_PER_PAGE = 50
WORKFLOW_STATES: tuple[str, ...] = get_args(WorkflowState)
JOB_STATES: tuple[str, ...] = tuple(s.value for s in JobState)


def cron_in_words(cron: str) -> str:
    """``*/5 * * * *`` → "Every 5 minutes", or "" where the library cannot say it."""
    try:
        return str(get_description(cron))
    except Exception:  # cron_descriptor raises its own family for expressions it cannot word
        return ""


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, shortly: "4s", "12m", "3h", "2d"."""
    if moment is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(moment: datetime | None, now: datetime | None = None) -> Markup:
    """A moment as ``<time>``: "4m ago" (or "in 4m"), the exact time on hover; the browser
    rewrites both in its own words and time zone (app.js)."""
    if moment is None:
        return Markup("\u2013")  # an en dash, as the templates show nothing
    now = now or datetime.now(UTC)
    text = f"in {age(now, moment)}" if moment > now else f"{age(moment, now)} ago"
    exact = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(moment.isoformat(), exact, text)


def _args_filter(text: str) -> dict[str, Any] | None:
    """The args search's JSON object (``{"customer_id": 42}``); ValueError saying what is wrong."""
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"args: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError('args: a JSON object, such as {"customer_id": 42}')
    return value


def limits_in_words(limits: QueueLimitsInfo) -> str:
    """``4 per process, 10 global, 100/minute, 2 per key, 10/minute per key``, or an en dash for none."""
    parts = [
        *([f"{limits.concurrency} per process"] if limits.concurrency is not None else []),
        *([f"{limits.global_concurrency} global"] if limits.global_concurrency is not None else []),
        *([limits.rate_limit] if limits.rate_limit else []),
        *([f"{limits.key_concurrency} per key"] if limits.key_concurrency is not None else []),
        *([f"{limits.key_rate_limit} per key"] if limits.key_rate_limit else []),
    ]
    return ", ".join(parts) or "\u2013"


def finished(workflow: WorkflowInfo) -> int:
    """Its steps that have ended, whichever way."""
    return workflow.succeeded + workflow.failed + workflow.cancelled


class LoginForm(BaseModel):
    key: str = Field(min_length=1, max_length=200)


def to_login(request: Request[Any, Any, Any], _exc: NotAuthorizedException) -> Response[Any]:
    """A dashboard page without a (valid) key: ask for one."""
    return Redirect(f"/ui/login?next={quote(request.url.path)}")


def _not_found(message: str) -> Response[str]:
    body = f"<!doctype html><title>Not found</title><p>{escape(message)} <a href='/ui'>Overview</a>"
    return Response(body, status_code=404, media_type=MediaType.HTML)


async def _charts(client: Client, window: Window, queue: str | None = None) -> list[Chart]:
    """The charts of the window from the rollup; none when its read ran past its timeout."""
    try:
        return charts(await client.stats.series(window, queue))
    except asyncpg.QueryCanceledError:
        return []


ChartWindow = Annotated[Window, QueryParameter(description="The charts' window: 1h or 1d.")]


def _local(path: str) -> str:
    """Only a path on this site (an absolute or protocol-relative URL would be an open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") else "/ui"


@get("/", include_in_schema=False, opt=PUBLIC_ROUTE)
async def root() -> Redirect:
    return Redirect("/ui")


class DashboardController(Controller):
    path = "/ui"
    include_in_schema = False
    opt = needs(Scope.JOBS_READ)
    exception_handlers = {NotAuthorizedException: to_login}

    @get("/")
    async def overview(
        self,
        client: ClientDep,
        engine: EngineDep,
        fragment: Annotated[bool, QueryParameter(description="Only the queue table.")] = False,
        window: ChartWindow = "1h",
    ) -> Template:
        """Every queue: counts per state, paused, throughput and the oldest queued job's age; the
        charts of every queue together."""
        queues = await client.queues(max_age_s=OVERVIEW_MAX_AGE_S)
        known = {q.name for q in queues}
        served = sorted(set(engine.queues) - known) if engine.settings.worker else []
        workers = await client.workers.served_queues(max_age_s=OVERVIEW_MAX_AGE_S)
        unserved = {q.name for q in queues if not served_by(q.name, workers)}
        context: dict[str, object] = {
            "queues": queues,
            "idle": served,
            "states": list(JobState),
            "unserved": unserved,
        }
        if fragment:
            return Template(template_name="_queues.html.j2", context=context)
        context.update(
            charts=await _charts(client, window),
            window=window,
            stats_interval_s=engine.settings.stats_interval_s,
        )
        return Template(template_name="overview.html.j2", context=context)

    @get("/queues/{name:str}")
    async def queue(
        self,
        name: Annotated[str, Parameter(pattern=QUEUE_NAME)],
        client: ClientDep,
        engine: EngineDep,
        window: ChartWindow = "1h",
    ) -> Template | Response[str]:
        """One queue: its counts and charts, pause and resume, and its limits across replicas,
        changeable."""

        def named(queues: list[QueueInfo]) -> QueueInfo | None:
            return next((q for q in queues if q.name == name), None)

        # The overview's read, unless it is older than the queue (then a fresh one).
        found = named(await client.queues(max_age_s=OVERVIEW_MAX_AGE_S)) or named(await client.queues())
        if found is None and not (engine.settings.worker and name in engine.queues):
            return _not_found(f"No queue {name}.")
        context = {
            "queue": found or QueueInfo(name=name, paused=False, counts={}),
            "states": list(JobState),
            "charts": await _charts(client, window, name),
            "window": window,
            "stats_interval_s": engine.settings.stats_interval_s,
        }
        return Template(template_name="queue.html.j2", context=context)

    @get("/jobs")
    async def jobs(
        self,
        client: ClientDep,
        # The filter form sends its empty fields too: an empty one is no filter.
        job_state: Annotated[str | None, QueryParameter(name="state", max_length=20)] = None,
        queue: Annotated[str | None, Parameter(pattern=f"^$|{QUEUE_NAME}")] = None,
        task: Annotated[str | None, Parameter(max_length=200)] = None,
        cursor: Annotated[int | None, Parameter(ge=1, le=2**63 - 1)] = None,
        job_id: Annotated[str | None, QueryParameter(name="id", max_length=20)] = None,
        args: Annotated[str | None, Parameter(max_length=2000)] = None,
        error: Annotated[str | None, Parameter(max_length=200)] = None,
        fragment: Annotated[bool, QueryParameter(description="Only the table.")] = False,
    ) -> Template | Response[Any]:
        """Jobs newest first, filtered, a page at a time (the API's keyset pages); or a bounded
        search by args (JSON containment) and error text; ``id`` goes to that job's page."""
        filters = {
            "state": job_state or "",
            "queue": queue or "",
            "task": task or "",
            "id": (job_id or "").strip(),
            "args": (args or "").strip(),
            "error": (error or "").strip(),
        }
        context: dict[str, Any] = {
            "filters": filters,
            "query": urlencode({k: v for k, v in filters.items() if v and k != "id"}),
            "states": list(JobState),
            "tasks": [t.name for t in client.registry],
            "jobs": [],
            "next_cursor": None,
            "searched": None,
            "problem": None,
        }
        name = "_jobs.html.j2" if fragment else "jobs.html.j2"
        if filters["id"]:
            wanted = int(filters["id"]) if filters["id"].isdigit() and 0 < int(filters["id"]) < 2**63 else 0
            try:
                return Redirect(f"/ui/jobs/{(await client.get(wanted)).id}")
            except JobNotFound:
                context["problem"] = f"No job has the id {filters['id']!r}."
                return Template(template_name=name, context=context, status_code=404)
        if job_state and job_state not in JOB_STATES:
            raise ValidationException(f"state: one of {', '.join(JOB_STATES)}, not {job_state!r}")
        wanted_state = JobState(job_state) if job_state else None
        if filters["args"] or filters["error"]:
            try:
                found = await client.search_jobs(
                    args=_args_filter(filters["args"]),
                    error=filters["error"] or None,
                    state=wanted_state,
                    queue=queue or None,
                    task=task or None,
                    before_id=cursor,
                    limit=JOBS_PER_PAGE,
                )
            except ValueError as exc:
                context["problem"] = str(exc)
                return Template(template_name=name, context=context, status_code=400)
            except asyncpg.QueryCanceledError:
                context["problem"] = (
                    f"The search ran past its {SEARCH_TIMEOUT_S:g} s limit: narrow it (state, queue, task)."
                )
                return Template(template_name=name, context=context, status_code=503)
            context.update(jobs=found.items, next_cursor=found.next_cursor, searched=found)
        else:
            listed = await client.list_jobs(
                state=wanted_state,
                queue=queue or None,
                task=task or None,
                before_id=cursor,
                limit=JOBS_PER_PAGE,
            )
            context.update(jobs=listed, next_cursor=listed[-1].id if len(listed) == JOBS_PER_PAGE else None)
        return Template(template_name=name, context=context)

    @get("/jobs/{job_id:int}")
    async def job(self, job_id: FromPath[int], client: ClientDep) -> Template | Response[str]:
        """One job: fields, live progress and events, every attempt's error, the result."""
        try:
            found = await client.get(job_id)
        except JobNotFound:
            return _not_found(f"No job {job_id}.")
        return Template(template_name="job.html.j2", context={"job": found})

    @get("/workflows")
    async def workflows(
        self,
        client: ClientDep,
        workflow_state: Annotated[WorkflowState | None, QueryParameter(name="state")] = None,
        cursor: Annotated[int | None, Parameter(ge=1, le=2**63 - 1)] = None,
    ) -> Template:
        """Workflows newest first, filtered by state, a page at a time (the API's keyset pages)."""
        found = await client.list_workflows(state=workflow_state, before_id=cursor, limit=WORKFLOWS_PER_PAGE)
        context = {
            "workflows": found,
            "state": workflow_state or "",
            "next_cursor": found[-1].id if len(found) == WORKFLOWS_PER_PAGE else None,
            "states": WORKFLOW_STATES,
            "finished": finished,
        }
        return Template(template_name="workflows.html.j2", context=context)

    @get("/workflows/{workflow_id:int}")
    async def workflow(self, workflow_id: FromPath[int], client: ClientDep) -> Template | Response[str]:
        """A workflow's DAG (or, past a few hundred steps, its steps by layer), live; cancel, retry."""
        try:
            found = await client.workflow(workflow_id)
        except WorkflowNotFound:
            return _not_found(f"No workflow {workflow_id}.")
        context = {
            "workflow": found,
            "dag": layout(found.steps or []),
            "node": {"width": NODE_WIDTH, "height": NODE_HEIGHT},
            "max_drawn": MAX_DRAWN_STEPS,
            "finished": finished,
        }
        return Template(template_name="workflow.html.j2", context=context)

    @get("/schedules")
    async def schedules(self, client: ClientDep) -> Template:
        """Schedules with their cron in words, timezone, next fire times, last job; a form that
        creates or edits one (its fire times previewed as the cron is typed)."""
        rows = [(s, cron_in_words(s.cron)) for s in await client.schedules.all()]
        tasks = [{"name": t.name, "schema": t.args_schema()} for t in client.registry]
        return Template(template_name="schedules.html.j2", context={"schedules": rows, "tasks": tasks})

    @get("/schedules/preview")
    async def schedule_preview(
        self,
        cron: Annotated[str, Parameter(max_length=200)] = "",
        timezone: Annotated[str, Parameter(max_length=100)] = "UTC",
    ) -> dict[str, Any]:
        """The schedule form's preview: the fire times GET /schedules/preview gives and the cron in
        words, or what is wrong, always a 200: the form asks at each keystroke, and a cron half
        typed is no error (nor one in the browser's console)."""
        try:
            upcoming = Schedules.preview(cron, timezone or "UTC")
        except InvalidArgumentsError as exc:
            return {"upcoming": [], "words": "", "errors": exc.extra["errors"]}
        return {"upcoming": [t.isoformat() for t in upcoming], "words": cron_in_words(cron), "errors": []}

    @get("/failures")
    async def failures(self, client: ClientDep) -> Template:
        """Failed jobs grouped by task and error type."""
        groups = await client.failures()
        imports = (await list_imports(client.pool, with_failures=True, limit=20)).items
        context = {"groups": groups, "imports": imports, "window": FAILURES_WINDOW}
        return Template(template_name="failures.html.j2", context=context)

    @get("/imports/{import_id:int}")
    async def import_page(
        self,
        import_id: FromPath[int],
        client: ClientDep,
        cursor: Annotated[int | None, Parameter(ge=0, le=2**31 - 1)] = None,
    ) -> Template | Response[str]:
        """An import's counts and its failed rows, 100 at a time."""
        try:
            info = await get_import(client.pool, import_id)
        except ImportNotFound:
            return _not_found(f"No import {import_id}.")
        rows = await failed_rows(client.pool, import_id, after_line=cursor or 0, limit=100)
        return Template(template_name="import.html.j2", context={"imp": info, "rows": rows})

    @get("/enqueue")
    async def enqueue(self, client: ClientDep) -> Template:
        """A form per task, generated in the browser from its argument schema."""
        tasks: list[dict[str, Any]] = [
            {"name": t.name, "queue": t.queue, "description": t.description, "schema": t.args_schema()}
            for t in client.registry
        ]
        return Template(template_name="enqueue.html.j2", context={"tasks": tasks})


class LoginController(Controller):
    """Asks for an API key once and keeps it in an HttpOnly, SameSite=Strict cookie; the form posts
    carry Litestar's CSRF token."""

    path = "/ui"
    include_in_schema = False
    opt = PUBLIC_ROUTE

    @get("/login")
    async def form(self, next_path: Annotated[str, QueryParameter(name="next")] = "/ui") -> Template:
        return Template(template_name="login.html.j2", context={"next": _local(next_path), "error": None})

    @post("/login", status_code=303)
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        next_path: Annotated[str, QueryParameter(name="next")] = "/ui",
    ) -> Response[Any]:
        state: AuthState = request.app.state.auth
        principal = await state.keys.verify(data.key.strip())
        if principal is None:
            context = {"next": _local(next_path), "error": "That key is unknown or revoked."}
            return Template(template_name="login.html.j2", context=context, status_code=401)
        response: Response[Any] = Redirect(_local(next_path), status_code=303)
        response.set_cookie(
            KEY_COOKIE,
            data.key.strip(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @post("/logout", status_code=303)
    async def logout(self) -> Response[Any]:
        response: Response[Any] = Redirect("/ui/login", status_code=303)
        response.delete_cookie(KEY_COOKIE)
        return response
