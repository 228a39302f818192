"""Every error skiplock raises on purpose.

    SkiplockError
    ├── ConfigError              a setting is missing or invalid
    ├── DatabaseError            PostgreSQL refused or dropped a statement (asyncpg errors are mapped here)
    │   ├── DatabaseUnavailableError  unreachable, the connection broke, the server going away (503)
    │   ├── StatementStoppedError     a time limit, a lock wait or a conflict stopped it; retry (503)
    │   ├── StatementRefusedError     the server refused the statement for another reason (500)
    │   └── MigrationError       a migration file is missing, out of order or failed
    ├── NotFoundError            a job, queue or task that does not exist
    │   ├── JobNotFound
    │   ├── ImportNotFound
    │   ├── ScheduleNotFound
    │   ├── WorkflowNotFound
    │   ├── WorkerNotFound
    │   └── UnknownTaskError
    ├── InvalidArgumentsError    job arguments fail the task's model
    │   └── WorkflowInvalid      a workflow's steps cannot run: a cycle, an unknown or repeated name, bad args
    ├── CsvFileError             a CSV file no row of which can load (no usable header, a line too long)
    ├── UploadError              an upload refused while it arrives; nothing of it is kept
    │   ├── InvalidUploadError        malformed multipart, no file part, an empty body (400)
    │   ├── UploadTooLargeError       over SKIPLOCK_IMPORT_MAX_BYTES (413)
    │   ├── UploadTimeoutError        the client stopped sending (408)
    │   └── UnsupportedMediaTypeError not CSV and not multipart/form-data (415)
    ├── BusyError                too much of something is in progress; retry shortly
    ├── AccessDenied             skiplock.http.Client: the service refused its key (401, 403)
    ├── ServiceUnreachable       skiplock.http.Client: no answer from the service (connect, timeout)
    ├── ConflictError            the request is valid but the current state forbids it
    │   ├── InvalidStateError    cancel a finished job, retry a running one …
    │   └── WorkerOffline        a request to a worker that stopped or missed its heartbeats
    ├── FetchError               an outbound HTTP fetch failed (``retryable`` says whether to try again)
    │   ├── FetchRefusedError    the URL or the address it resolves to is not allowed
    │   ├── FetchTimeoutError    the upstream did not answer in time
    │   ├── UpstreamStatusError  the upstream answered with an error status
    │   └── BadResponseError     the body is too large, or not what the task reads (JSON, HTML)
    ├── JobError                 raised by a task to steer its own outcome
    │   └── PermanentJobError    fail now, never retry
    ├── Snooze                   raised by a task: back to its queue for ``seconds``, no attempt used
    ├── LeaseLostError           a run no longer holds its job's lease: what it writes is refused
    ├── TaskProcessCrashed       a process-pool task's process ended before it answered (retried)
    ├── NotInTaskProcess         a process-pool task used what only the engine's process has
    ├── JobFailed                a waited-for job ended without a result (``state``, ``error``)
    │   └── JobCancelled         … because it was cancelled
    ├── WorkflowFailed           a waited-for workflow failed or was cancelled (``state``, ``error``)
    ├── ResultTimeout            a waited-for job or workflow was not final in time (also a TimeoutError)
    └── SubscriptionError        an event subscriber is given nothing more
        ├── SubscriptionClosed   the subscriber went away
        └── EventsMissed         the subscriber may have missed events (``reason`` says why); it can resume

Each subclass's docstring is its default message. Raised by a task, an error whose ``retryable``
is False fails its job at once, whatever attempts are left (the engine knows no error by name).
:func:`str_of` reads any exception's text safely (the db layer and the services log with it).
"""

from __future__ import annotations

import math
from typing import Any


def str_of(exc: BaseException) -> str:
    """``str(exc)`` that never raises (an exception's own ``__str__`` may), never empty."""
    try:
        text = str(exc)
    except BaseException:  # user code: whatever it raises must not escape
        text = ""
    return text or type(exc).__name__


class SkiplockError(Exception):
    """skiplock failed."""

    #: Raised by a task: whether another attempt may succeed. False fails the job at once.
    retryable: bool = True

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.extra = extra
        super().__init__(self.message)


class ConfigError(SkiplockError):
    """A setting is missing or invalid."""


class DatabaseError(SkiplockError):
    """The database failed the statement."""


class DatabaseUnavailableError(DatabaseError):
    """The database is unavailable; retry shortly."""


class StatementStoppedError(DatabaseError):
    """The statement was stopped before it finished; retry shortly."""


class StatementRefusedError(DatabaseError):
    """The database refused the statement."""


class MigrationError(DatabaseError):
    """Migrations could not be applied."""


class NotFoundError(SkiplockError):
    """Not found."""


class JobNotFound(NotFoundError):
    """No job has this id."""


class ImportNotFound(NotFoundError):
    """No import has this id."""


class ScheduleNotFound(NotFoundError):
    """No schedule has this id."""


class WorkflowNotFound(NotFoundError):
    """No workflow has this id."""


class WorkerNotFound(NotFoundError):
    """No worker has this id."""


class UnknownTaskError(NotFoundError):
    """No task is registered under this name."""


class InvalidArgumentsError(SkiplockError):
    """The job's arguments do not match the task's model."""


class WorkflowInvalid(InvalidArgumentsError):
    """The workflow cannot be started: the message names the step (and field) at fault."""


class CsvFileError(SkiplockError, ValueError):
    """The file as a whole cannot be imported (no usable header row, a line too long): no row can load."""


class UploadError(SkiplockError):
    """The upload was refused."""


class InvalidUploadError(UploadError):
    """The upload is not a usable CSV body."""


class UploadTooLargeError(UploadError):
    """The upload is larger than this server accepts."""


class UploadTimeoutError(UploadError):
    """The client stopped sending the upload."""


class UnsupportedMediaTypeError(UploadError):
    """Send the CSV as text/csv or as a multipart/form-data file."""


class BusyError(SkiplockError):
    """The service is busy; retry shortly."""


class AccessDenied(SkiplockError):
    """The service refused the request's key: missing or unknown (401), or without the scope (403)."""

    retryable = False


class ServiceUnreachable(SkiplockError):
    """The service did not answer: it could not be reached, or the request timed out."""


class ConflictError(SkiplockError):
    """The current state forbids this."""


class InvalidStateError(ConflictError):
    """The job is not in a state that allows this."""


class WorkerOffline(ConflictError):
    """The worker is offline: it stopped, or missed its heartbeats."""


class FetchError(SkiplockError):
    """The fetch failed."""

    retryable = True  # connection errors: the next attempt may reach it


class FetchRefusedError(FetchError):
    """The fetch was refused: the URL or its address is not allowed."""

    retryable = False


class FetchTimeoutError(FetchError):
    """The upstream did not answer in time."""


class UpstreamStatusError(FetchError):
    """The upstream answered with an error status."""

    def __init__(self, message: str | None = None, *, status: int, **extra: Any) -> None:
        super().__init__(message, status=status, **extra)
        self.status = status
        # A 5xx or 429 may pass; any other 4xx will answer the same next time.
        self.retryable = status >= 500 or status == 429


class BadResponseError(FetchError):
    """The upstream's answer cannot be used."""

    retryable = False


class JobError(SkiplockError):
    """The job failed."""


class PermanentJobError(JobError):
    """The job failed and must not be retried."""

    retryable = False


class Snooze(SkiplockError):
    """The job is put back in its queue for a while."""

    def __init__(self, seconds: float, message: str | None = None) -> None:
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"Snooze needs a finite number of seconds >= 0, not {seconds!r}")
        super().__init__(message, seconds=seconds)
        #: How long until the job is due again.
        self.seconds = float(seconds)


class LeaseLostError(SkiplockError):
    """This run no longer holds its job's lease; it is being stopped and nothing it writes is kept."""


class TaskProcessCrashed(SkiplockError):
    """The task's process ended before it answered."""


class NotInTaskProcess(SkiplockError):
    """A task running in the process pool has only its job, progress and log on its context."""

    retryable = False  # the same next time


class JobFailed(SkiplockError):
    """The job failed."""

    #: Raised in a task that waited for another job: that job is final, another attempt would
    #: be told the same (retry the job it waited for instead).
    retryable = False

    def __init__(self, message: str | None = None, *, job_id: int, state: str, error: Any = None) -> None:
        super().__init__(message, job_id=job_id, state=state)
        self.job_id = job_id
        self.state = state
        #: The last attempt's error (an ``AttemptError``), or None (a job cancelled before it ran).
        self.error = error


class JobCancelled(JobFailed):
    """The job was cancelled."""


class WorkflowFailed(SkiplockError):
    """The workflow failed."""

    #: As JobFailed: the workflow is final, waiting again would be told the same (retry it instead).
    retryable = False

    def __init__(
        self,
        message: str | None = None,
        *,
        workflow_id: int,
        state: str,
        error: Any = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, workflow_id=workflow_id, state=state)
        self.workflow_id = workflow_id
        #: 'failed' or 'cancelled'.
        self.state = state
        #: The step that failed (a ``FailedStep``: its name, job id, state and last error), or None.
        self.error = error
        #: The last steps' results by name, a step that did not succeed as {state, error}.
        self.result = result or {}


class ResultTimeout(SkiplockError, TimeoutError):
    """The job did not finish in time."""

    def __init__(
        self,
        message: str | None = None,
        *,
        job_id: int | None = None,
        state: str,
        workflow_id: int | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, state=state, workflow_id=workflow_id)
        #: The job waited for (None for a workflow's wait).
        self.job_id = job_id
        #: The workflow waited for (None for a job's wait).
        self.workflow_id = workflow_id
        #: Where the job (or workflow) was when the wait ended.
        self.state = state


class SubscriptionError(SkiplockError):
    """The event subscription ended."""


class SubscriptionClosed(SubscriptionError):
    """The subscriber went away (``Subscription.close``): nothing more is given to it."""


class EventsMissed(SubscriptionError):
    """The subscriber may have missed events; it can resume (a job's from ``after=last_seq``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
