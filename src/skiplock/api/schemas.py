"""Request and response bodies of the HTTP API (the engine's Job is the job's read model)."""

from __future__ import annotations

from typing import Any

from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from skiplock.queue.client import EnqueueRequest
from skiplock.queue.limits import MAX_CONCURRENCY, MAX_GLOBAL_CONCURRENCY
from skiplock.queue.models import Job, QueueInfo
from skiplock.queue.tasks import MAX_KEY_CONCURRENCY, MAX_PRIORITY
from skiplock.queue_names import QUEUE_NAME as QUEUE_NAME  # re-exported: routes validate with it
from skiplock.rates import Rate


def parse_cursor(cursor: str | None, *, below: int) -> int | None:
    """A keyset page's ``cursor`` (the previous page's ``next_cursor``): a positive integer under
    ``below``, or None for the first page; a 400 naming it otherwise."""
    if cursor is None:
        return None
    if not cursor.isdigit() or not 0 < int(cursor) < below:
        raise ValidationException(f"bad cursor {cursor[:40]!r}: pass next_cursor from the previous page")
    return int(cursor)


class JobCreate(BaseModel):
    """Enqueue one job. Options left out take the task's defaults."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200, examples=["sleep"])
    args: dict[str, Any] = Field(default_factory=dict, examples=[{"seconds": 5, "steps": 5}])
    queue: str | None = Field(default=None, pattern=QUEUE_NAME)
    priority: int | None = Field(
        default=None, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Higher runs first."
    )
    run_at: AwareDatetime | None = Field(default=None, description="Not before this instant.")
    delay_s: float | None = Field(default=None, ge=0, le=366 * 86400, description="Not before now + delay.")
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    unique_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="While a job with this key is queued or running, that job is returned instead.",
    )
    # Their values are checked by the engine (a 422, as for args): positive, not both, not past.
    expires_in_s: float | None = Field(
        default=None,
        description="Not started within this many seconds (> 0): never started, it ends cancelled "
        "with an error of type 'expired'.",
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="Not started by this instant (not already past): as expires_in_s."
    )

    @model_validator(mode="after")
    def _one_start_time(self) -> JobCreate:
        if self.run_at is not None and self.delay_s is not None:
            raise ValueError("give run_at or delay_s, not both")
        return self

    def request(self) -> EnqueueRequest:
        """The engine's request for this job: the same fields, checked as the API's contract says."""
        return EnqueueRequest(
            self.task,
            self.args,
            self.queue,
            self.priority,
            self.run_at,
            self.delay_s,
            self.max_attempts,
            self.timeout_s,
            self.unique_key,
            self.expires_in_s,
            self.expires_at,
        )


class BatchCreated(BaseModel):
    """The ids of the jobs a batch created, in the order they were given."""

    count: int
    ids: list[int]


class JobPage(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[Job]
    next_cursor: str | None


class TaskInfo(BaseModel):
    name: str
    queue: str
    priority: int
    max_attempts: int
    timeout_s: float | None
    description: str
    args_schema: dict[str, Any]


class QueueLimitsChange(BaseModel):
    """PATCH /queues/{name}: each field optional; left out, it stays; null clears it."""

    model_config = ConfigDict(extra="forbid")

    concurrency: StrictInt | None = Field(
        default=None, ge=1, le=MAX_CONCURRENCY, description="Jobs of the queue each process runs at once."
    )
    global_concurrency: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_GLOBAL_CONCURRENCY,
        description="Jobs of the queue running across every process.",
    )
    rate_limit: str | None = Field(
        default=None,
        max_length=40,
        description="'<count>/<unit>' (second, minute, hour, day): at most count starts in any window of one "
        "unit, across every process.",
        examples=["100/minute"],
    )
    key_concurrency: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_KEY_CONCURRENCY,
        description="Jobs running at once per concurrency key value (a job's key: its task's "
        "concurrency_key), across every process.",
    )
    key_rate_limit: str | None = Field(
        default=None,
        max_length=40,
        description="'<count>/<unit>': at most count starts per concurrency key value in any window of one "
        "unit, across every process.",
        examples=["10/minute"],
    )

    @field_validator("concurrency", "global_concurrency", "key_concurrency", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        # Litestar validates bodies with strict=False, which overrides StrictInt: "5" would pass.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("must be a whole number, not text, a fraction or a boolean")
        return value

    @field_validator("rate_limit", "key_rate_limit")
    @classmethod
    def _check_rate(cls, value: str | None) -> str | None:
        if value is not None:
            Rate.parse(value)
        return value

    def changes(self) -> dict[str, Any]:
        """The fields sent, the rates parsed: what Client.set_limits takes."""
        sent = self.model_dump(include=self.model_fields_set)
        for name in ("rate_limit", "key_rate_limit"):
            if sent.get(name) is not None:
                sent[name] = Rate.parse(sent[name])
        return sent


class QueueOut(QueueInfo):
    concurrency: int | None = Field(
        description="This process's limit for the queue; null if it does not serve it."
    )
    served_by: int = Field(
        default=0, description="Live workers claiming from the queue (quiet and stopping ones do not)."
    )
    unserved: bool = Field(default=False, description="No live worker claims from the queue: its jobs wait.")


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error answer: the status, what went wrong, and details (``errors``: the fields at fault;
    for a malformed parameter, a list naming each one)."""

    status_code: int = Field(examples=[404])
    detail: str = Field(examples=["no job with id 42"])
    extra: dict[str, Any] | list[Any] | None = None


#: What each error every route may give means, unless the route says more.
_COMMON_ERRORS = {
    400: "A malformed parameter, or a body that is not valid JSON (UTF-8, nested at most 64 deep): "
    "`detail` names it.",
    401: "An API key is required and none was sent, or it is unknown or revoked "
    "(`Authorization: Bearer <key>`).",
    403: "The key lacks the route's scope (`extra.scope` names it), or a write authenticated by the "
    "dashboard's cookie came without its CSRF token.",
    413: "The body is larger than the service accepts.",
    429: "The caller's rate limit (SKIPLOCK_RATE_LIMIT) is spent: retry after Retry-After seconds.",
    503: "The database is unavailable, or a statement was stopped (a time limit, a lock wait): "
    "retry after Retry-After seconds; `extra.request_id` finds it in the log.",
}


def error_responses(
    *, public: bool = False, body: bool = False, database: bool = True, **described: str
) -> dict[int, ResponseSpec]:
    """OpenAPI responses for a route's error answers: ``error_responses(e404="No job has this id.")``
    plus those every route may give: 400, 401 and 403 and 429 (unless ``public``), 413 (with a
    ``body``), 503 (when it reads the ``database``). A code given replaces the common text."""
    codes = {400: _COMMON_ERRORS[400]}
    if not public:
        codes |= {code: _COMMON_ERRORS[code] for code in (401, 403, 429)}
    if body:
        codes[413] = _COMMON_ERRORS[413]
    if database:
        codes[503] = _COMMON_ERRORS[503]
    codes |= {int(code.removeprefix("e")): text for code, text in described.items()}
    return {
        code: ResponseSpec(ErrorBody, description=text, generate_examples=False)
        for code, text in sorted(codes.items())
    }
