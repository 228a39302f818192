"""Job events: history (GET /jobs/{id}/events), server-sent events (/jobs/{id}/stream), and
websockets (/ws/jobs/{id}, /ws/events, of a workflow's steps with ?workflow_id=). All three read
the same table through the event hub."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from litestar import Controller, WebSocket, get, websocket
from litestar.exceptions import ValidationException, WebSocketDisconnect
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, Parameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from pydantic import BaseModel

from skiplock.api.jobs import JobId
from skiplock.api.openapi import NEEDS_KEY
from skiplock.api.plugin import ClientDep, EngineDep
from skiplock.api.schemas import QUEUE_NAME, error_responses
from skiplock.api.security import BEARER_PROTOCOL, needs
from skiplock.auth import Scope
from skiplock.errors import JobNotFound, WorkflowNotFound
from skiplock.queue.events import EventHub, EventsMissed, JobEvent, Subscription, SubscriptionClosed
from skiplock.queue.models import FINAL_STATES, Job

After = Annotated[int, QueryParameter(ge=0, le=2**31 - 1, description="Only events with a greater seq.")]
MaybeAfter = Annotated[
    int | None, QueryParameter(ge=0, le=2**31 - 1, description="Only events with a greater seq.")
]

_QUEUE_NAME = re.compile(QUEUE_NAME)

CLOSE_NORMAL = 1000
CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_FOUND = 4404
#: The subscriber may have missed events (listener reconnected, a read failed, it fell behind):
#: a job's stream resumes with after=<last seq received>, /ws/events reloads the state and
#: reconnects. 4409 ("conflict": the client's view is stale) is in the private range 4000-4999,
#: unlike 1013, which says only "try again later" and is sent by proxies too.
CLOSE_RESUME = 4409


#: What GET /jobs/{id}/stream sends, as OpenAPI describes it.
EVENT_STREAM = ResponseSpec(
    str,
    media_type="text/event-stream",
    description=(
        "Server-sent events, one per job event: `id: <seq>`, `event: <kind>` (state, progress, log), "
        "`data: <the event as JSON>`; the stream ends after the job's final state. `event: resume` "
        "with `data: {after, reason}` when events may have been missed: reconnect with that "
        "Last-Event-ID (or after=)."
    ),
    generate_examples=False,
)


class EventOut(BaseModel):
    job_id: int
    seq: int
    at: Any
    kind: str
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int | None


def _parse_after(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or int(raw) > 2**31 - 1:
        raise ValidationException(f"bad after/Last-Event-ID {raw[:40]!r}: a non-negative event seq")
    return int(raw)


async def follow(hub: EventHub, sub: Subscription, job: Job, after: int) -> AsyncIterator[JobEvent]:
    """The subscription's events (it began ``after``) until the job's final state (EventsMissed
    if there may be a gap)."""
    # Against where the subscription began, not sub.last_seq: the hub may have buffered every
    # event already, and a finished job's stream would then end before sending any.
    try:
        if job.state in FINAL_STATES and job.event_seq <= after:
            return  # nothing more will ever come
        while True:
            event = await sub.get()
            yield event
            if event.is_final:
                return
    finally:
        hub.unsubscribe(sub)


class EventController(Controller):
    opt = needs(Scope.JOBS_READ)
    path = "/jobs"
    tags = ["events"]
    security = NEEDS_KEY

    @get(
        "/{job_id:str}/events",
        operation_id="ListJobEvents",
        summary="List a job's events",
        responses=error_responses(e404="No job has this id."),
    )
    async def history(
        self,
        job_id: JobId,
        client: ClientDep,
        after: After = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 200,
    ) -> EventPage:
        """A job's state, progress and log events, oldest first; page with ``after=next_after``."""
        await client.get(int(job_id))  # 404 for an unknown job
        events = await client.events(int(job_id), after=after, limit=limit)
        items = [EventOut(job_id=e.job_id, seq=e.seq, at=e.at, kind=e.kind, data=e.data) for e in events]
        return EventPage(items=items, next_after=items[-1].seq if len(items) == limit else None)

    @get(
        "/{job_id:str}/stream",
        operation_id="StreamJobEvents",
        summary="Stream a job's events",
        responses={
            200: EVENT_STREAM,
            **error_responses(e404="No job has this id."),
        },
    )
    async def stream(
        self,
        job_id: JobId,
        engine: EngineDep,
        after: MaybeAfter = None,
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID",
                max_length=40,
                description="The last seq received (an EventSource sends it when it reconnects).",
            ),
        ] = None,
    ) -> ServerSentEvent:
        """Server-sent events (``id: <seq>``) until the job's final state; a client reconnecting
        with ``Last-Event-ID`` gets exactly the events after it (``after`` wins over it)."""
        start = _parse_after(last_event_id) if after is None else after
        job = await engine.client.get(int(job_id))

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            # Subscribed once the response streams: a client gone before that leaves nothing behind.
            sub = engine.hub.subscribe_job(job.id, start)
            try:
                async for event in follow(engine.hub, sub, job, start):
                    yield ServerSentEventMessage(data=event.json, event=event.kind, id=event.seq)
            except EventsMissed as missed:  # the client resumes with Last-Event-ID (or after=)
                yield ServerSentEventMessage(
                    event="resume",
                    data=orjson.dumps({"after": sub.last_seq, "reason": missed.reason}).decode(),
                )

        return ServerSentEvent(messages())


async def accept(socket: WebSocket[Any, Any, Any]) -> None:
    """Accept, naming the ``bearer`` subprotocol when the client sent its key that way (a browser
    must get back one of the subprotocols it offered)."""
    offered = [p.strip() for p in socket.headers.get("sec-websocket-protocol", "").split(",")]
    await socket.accept(subprotocols=BEARER_PROTOCOL if BEARER_PROTOCOL in offered else None)


async def _send_until_done(
    socket: WebSocket[Any, Any, Any], sub: Subscription, events: AsyncIterator[JobEvent]
) -> None:
    """Send each event; stop when the events end or the client goes away, whichever is first.
    Going away closes the subscription, which ends the events: the sender only waits on the
    subscription (one wake-up per event, not a task and a wait on two of them)."""
    watcher = asyncio.ensure_future(_close_on_disconnect(socket, sub))
    try:
        async for event in events:
            await socket.send_text(event.json)
    except SubscriptionClosed:
        return
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _close_on_disconnect(socket: WebSocket[Any, Any, Any], sub: Subscription) -> None:
    try:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await socket.receive_data(mode="text")
    finally:
        sub.close()


@websocket("/ws/jobs/{job_id:str}", name="job_events_ws", opt=needs(Scope.JOBS_READ))
async def job_events_ws(socket: WebSocket[Any, Any, Any], job_id: FromPath[str], engine: EngineDep) -> None:
    """First message: the job; then every event after ``after`` in seq order; closes with 1000
    after the final state, 4404 for an unknown job, 4400 for bad input, 4409 when events may have
    been missed (the reason names the ``after=`` to reconnect with)."""
    await accept(socket)
    try:
        after = _parse_after(socket.query_params.get("after"))
        if not job_id.isdigit() or not 0 < int(job_id) < 2**63:
            raise ValidationException(f"bad job id {job_id[:40]!r}")
    except ValidationException as exc:
        await socket.close(CLOSE_BAD_REQUEST, str(exc.detail)[:120])
        return
    try:
        job = await engine.client.get(int(job_id))
    except JobNotFound:
        await socket.close(CLOSE_NOT_FOUND, f"no job with id {job_id}")
        return
    sub = engine.hub.subscribe_job(job.id, after)
    await socket.send_text(orjson.dumps({"kind": "snapshot", "job": job.model_dump(mode="json")}).decode())
    try:
        await _send_until_done(socket, sub, follow(engine.hub, sub, job, after))
    except EventsMissed as missed:
        await socket.close(CLOSE_RESUME, f"may have missed events ({missed.reason}); after={sub.last_seq}")
        return
    finally:
        engine.hub.unsubscribe(sub)
    with contextlib.suppress(Exception):
        await socket.close(CLOSE_NORMAL, "job finished")


@websocket("/ws/events", name="all_events_ws", opt=needs(Scope.JOBS_READ))
async def all_events_ws(socket: WebSocket[Any, Any, Any], engine: EngineDep) -> None:
    """Every new event of every job, optionally of one ``queue`` and/or ``task``; closes with 4409
    when events may have been missed (listener reconnected, a read failed, too slow): reload the
    state you show, then reconnect. With ``workflow_id``: every new event of that workflow's
    steps only, after a first message, the workflow as read once subscribed (``{"kind":
    "snapshot", "workflow": …}``, its steps' states included); 4404 for an unknown workflow."""
    await accept(socket)
    queue, task = socket.query_params.get("queue"), socket.query_params.get("task")
    workflow = socket.query_params.get("workflow_id")
    if (
        (queue is not None and not _QUEUE_NAME.match(queue))
        or (task is not None and not 0 < len(task) <= 200)
        or (workflow is not None and not (workflow.isdigit() and 0 < int(workflow) < 2**63))
    ):
        await socket.close(CLOSE_BAD_REQUEST, "bad queue, task or workflow_id filter")
        return
    steps: frozenset[int] | None = None
    if workflow is not None:
        try:  # a workflow's steps never change: its step ids, known now, are the filter
            info = await engine.client.workflow(int(workflow))
        except WorkflowNotFound:
            await socket.close(CLOSE_NOT_FOUND, f"no workflow with id {workflow}")
            return
        steps = frozenset(step.job_id for step in info.steps or [])
    sub = engine.hub.subscribe_all(queue=queue, task=task, job_ids=steps)

    async def forever() -> AsyncIterator[JobEvent]:
        while True:
            yield await sub.get()

    try:
        if workflow is not None:  # read once subscribed: what changes after it arrives as events
            info = await engine.client.workflow(int(workflow))
            snapshot = {"kind": "snapshot", "workflow": info.model_dump(mode="json")}
            await socket.send_text(orjson.dumps(snapshot).decode())
        await _send_until_done(socket, sub, forever())
    except EventsMissed as missed:
        await socket.close(CLOSE_RESUME, f"may have missed events ({missed.reason}); reload and reconnect")
    finally:
        engine.hub.unsubscribe(sub)
