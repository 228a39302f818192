"""Workflows: named steps, each a job of a registered task, run in the order their ``after`` gives.

``chain``, ``group`` and ``chord`` are shapes of one :class:`Workflow`. What is checked here,
before anything is written: names, duplicates, unknown dependencies, cycles, the step count; each
step's task and args are checked by the client as any job's. The database does the rest (a step
waits until its dependencies have ended; migration 0013's trigger lets it go in the transaction
that ends the last of them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skiplock.errors import WorkflowInvalid
from skiplock.queue.models import AttemptError, JobState

#: Steps a workflow may have at most.
MAX_STEPS = 10_000
STEP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # the whole name: fullmatch
OnFailure = Literal["cancel", "continue"]
WorkflowState = Literal["running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class Step:
    """One step: a job of ``task`` with ``args``, run after the steps named in ``after``."""

    name: str
    task: str
    args: Any = None
    after: tuple[str, ...] = ()
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Workflow:
    """Steps and what happens when one fails for good: ``cancel`` what depends on it (the
    default), or ``continue`` (its dependents run and see the failure in ``ctx.upstream``)."""

    steps: tuple[Step, ...]
    name: str | None = None
    on_failure: OnFailure = "cancel"

    def ordered(self) -> list[Step]:
        """The steps, each after all of its dependencies (their ids follow this order), or
        :class:`WorkflowInvalid` naming what is wrong."""
        return order_steps(self.steps)

    @property
    def leaves(self) -> tuple[str, ...]:
        """The steps nothing depends on, in order: the workflow's result is theirs."""
        return _last_steps(self.steps)


def _part(part: Step | Workflow, n: int) -> list[Step]:
    """A part of a chain or group as steps with names unique among the parts: a step keeps its
    name (``str(n)`` if it has none); a workflow's steps are prefixed ``<n>.``, their ``after``
    too, so that two chains side by side never share a name."""
    if isinstance(part, Step):
        return [part if part.name else replace(part, name=str(n))]
    named = [s if s.name else replace(s, name=str(i)) for i, s in enumerate(part.steps)]
    return [replace(s, name=f"{n}.{s.name}", after=tuple(f"{n}.{a}" for a in s.after)) for s in named]


def _last_steps(steps: Sequence[Step]) -> tuple[str, ...]:
    """The steps nothing among ``steps`` depends on, in order."""
    used = {name for step in steps for name in step.after}
    return tuple(s.name for s in steps if s.name not in used)


def _first_steps(steps: Sequence[Step]) -> set[str]:
    names = {s.name for s in steps}
    return {s.name for s in steps if not set(s.after) & names}


def chain(*parts: Step | Workflow, name: str | None = None, on_failure: OnFailure = "cancel") -> Workflow:
    """Each part after the previous one; a step sees the previous part's last steps' results."""
    steps: list[Step] = []
    before: tuple[str, ...] = ()
    for n, part in enumerate(parts):
        inner = _part(part, n)
        first = _first_steps(inner)
        steps.extend(replace(s, after=(*before, *s.after)) if s.name in first else s for s in inner)
        before = _last_steps(inner)
    return Workflow(steps=tuple(steps), name=name, on_failure=on_failure)


def group(*parts: Step | Workflow, name: str | None = None, on_failure: OnFailure = "cancel") -> Workflow:
    """The parts side by side; their results are collected in the parts' order."""
    steps = [s for n, part in enumerate(parts) for s in _part(part, n)]
    return Workflow(steps=tuple(steps), name=name, on_failure=on_failure)


def chord(
    header: Workflow | Sequence[Step | Workflow],
    callback: Step,
    *,
    name: str | None = None,
    on_failure: OnFailure = "cancel",
) -> Workflow:
    """A group and a callback that runs after all of it and receives its results in order."""
    head = header if isinstance(header, Workflow) else group(*header)
    body = replace(
        callback, name=callback.name or "callback", after=(*_last_steps(head.steps), *callback.after)
    )
    return Workflow(steps=(*head.steps, body), name=name, on_failure=on_failure)


def order_steps(steps: Sequence[Step]) -> list[Step]:
    """``steps`` in an order where each comes after its dependencies (stable otherwise)."""
    if not steps:
        raise WorkflowInvalid("a workflow has at least one step", field="steps")
    if len(steps) > MAX_STEPS:
        raise WorkflowInvalid(f"at most {MAX_STEPS} steps a workflow, got {len(steps)}", field="steps")
    by_name: dict[str, Step] = {}
    for n, step in enumerate(steps):
        if not STEP_NAME.fullmatch(step.name or ""):
            raise WorkflowInvalid(
                f"steps[{n}].name: 1-100 characters of A-Z a-z 0-9 _ . - (got {step.name!r})",
                step=step.name,
                field=f"steps[{n}].name",
            )
        if step.name in by_name:
            raise WorkflowInvalid(
                f"step {step.name!r} is named twice", step=step.name, field=f"steps[{n}].name"
            )
        by_name[step.name] = step
    for n, step in enumerate(steps):
        if isinstance(step.after, str):  # a name, not a tuple of them: 'prev' read as p, r, e, v
            raise WorkflowInvalid(
                f"step {step.name!r}: after is a list of step names, not one name ({step.after!r})",
                step=step.name,
                field=f"steps[{n}].after",
            )
        if len(set(step.after)) != len(step.after):
            raise WorkflowInvalid(
                f"step {step.name!r}: a dependency is named twice in after",
                step=step.name,
                field=f"steps[{n}].after",
            )
        for dep in step.after:
            if dep not in by_name:
                raise WorkflowInvalid(
                    f"step {step.name!r}: after names {dep!r}, which is no step of this workflow",
                    step=step.name,
                    field=f"steps[{n}].after",
                )
    # Kahn's algorithm, taking ready steps in the order given.
    waiting = {s.name: len(s.after) for s in steps}
    below: dict[str, list[str]] = {s.name: [] for s in steps}
    for s in steps:
        for dep in s.after:
            below[dep].append(s.name)
    ready = [s.name for s in steps if not s.after]
    ordered: list[Step] = []
    while ready:
        name = ready.pop(0) if len(ready) < 64 else ready.pop()  # order matters little past a few
        ordered.append(by_name[name])
        for child in below[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(ordered) < len(steps):
        circle = _a_cycle({n: by_name[n].after for n, left in waiting.items() if left})
        raise WorkflowInvalid(
            "the steps' dependencies form a cycle: " + " -> ".join([*circle, circle[0]]),
            steps=circle,
            field="steps",
        )
    return ordered


def _a_cycle(after: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle among steps that all still wait (each has a dependency among them)."""
    start = next(iter(after))
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(dep for dep in after[node] if dep in after)
    return path[seen[node] :]


# --- what the API and the client return ---------------------------------------------------------


class WorkflowStep(BaseModel):
    """A step as read back: its job's id and state, and the steps it runs after."""

    name: str
    job_id: int
    task: str
    state: JobState
    after: list[str]


class WorkflowInfo(BaseModel):
    """A workflow: its state and progress, from its own row, and (when asked) its steps."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str | None
    on_failure: OnFailure
    state: WorkflowState
    steps_total: int = Field(description="Steps in the workflow.")
    succeeded: int
    failed: int
    cancelled: int
    progress: float = Field(description="Steps finished / steps_total, 0 to 1.")
    created_at: datetime
    finished_at: datetime | None
    steps: list[WorkflowStep] | None = Field(default=None, description="Given by GET /workflows/{id}.")

    @classmethod
    def from_record(cls, record: asyncpg.Record, steps: list[WorkflowStep] | None = None) -> WorkflowInfo:
        done = record["succeeded"] + record["failed"] + record["cancelled"]
        return cls(
            id=record["id"],
            name=record["name"],
            on_failure=record["on_failure"],
            state=record["state"],
            steps_total=record["steps"],
            succeeded=record["succeeded"],
            failed=record["failed"],
            cancelled=record["cancelled"],
            progress=round(done / record["steps"], 6),
            created_at=record["created_at"],
            finished_at=record["finished_at"],
            steps=steps,
        )

    @property
    def is_final(self) -> bool:
        return self.state != "running" and self.finished_at is not None


class FailedStep(BaseModel):
    """Why a workflow did not succeed: its first step that failed (else its first cancelled one),
    with that step's last error (null for a step cancelled before it ran)."""

    model_config = ConfigDict(frozen=True)

    step: str
    job_id: int
    state: JobState
    error: AttemptError | None


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """What a step sees in ``ctx.upstream`` for a dependency that did not succeed (only under
    ``on_failure="continue"``): its final state and its last error."""

    state: str
    error: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "error": self.error}


def typed_upstream(values: dict[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    """A step's ``ctx.upstream`` as its task declared it: each result an instance of ``model``
    (a dependency that did not succeed stays an :class:`UpstreamFailure`); :class:`WorkflowInvalid`
    naming the step whose result does not fit."""
    if model is None:
        return values
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, UpstreamFailure):
            typed[name] = value
            continue
        try:
            typed[name] = model.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'result'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise WorkflowInvalid(
                f"the result of step {name!r} is not a {model.__name__}: {problems}", step=name
            ) from exc
    return typed
