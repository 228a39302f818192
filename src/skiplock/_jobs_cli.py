"""``skiplock jobs …`` and ``skiplock queues …``: the queue from the shell, against the configured
database (what ``celery call`` and ``celery inspect`` are to Celery).

Plain output is one tab-separated line per job (``show``: one ``field: value`` line per field);
``--json`` prints the models as JSON instead. Exit codes: 0 done, 2 bad input or configuration, 3 no
such job, 4 not allowed in the job's state.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel

from skiplock.errors import ConflictError, InvalidArgumentsError, NotFoundError, SkiplockError
from skiplock.queue.client import Client
from skiplock.queue.models import Job, JobState, QueueInfo
from skiplock.queue_names import check_queue_name
from skiplock.settings import Settings

EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4


def add_commands(commands: Any) -> None:
    """The ``jobs`` and ``queues`` sub-commands, on the CLI's sub-parsers."""

    def json_flag(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--json", action="store_true", help="print JSON instead of text")
        return command

    jobs = commands.add_parser("jobs", help="enqueue, list, show, cancel and retry jobs")
    actions = jobs.add_subparsers(dest="jobs_command", required=True)
    enqueue = json_flag(actions.add_parser("enqueue", help="enqueue a job of TASK and print its id"))
    enqueue.add_argument("task")
    enqueue.add_argument("--args", default="{}", help="the task's arguments as a JSON object")
    enqueue.add_argument("--queue", help="instead of the task's queue")
    enqueue.add_argument("--priority", type=int)
    enqueue.add_argument("--delay", type=float, dest="delay_s", help="seconds before it is due")
    enqueue.add_argument("--max-attempts", type=int)
    enqueue.add_argument("--unique-key")
    listing = json_flag(actions.add_parser("list", help="jobs, newest first"))
    listing.add_argument("--state", choices=[s.value for s in JobState])
    listing.add_argument("--queue")
    listing.add_argument("--task")
    listing.add_argument("--limit", type=int, default=50)
    for name, what in (
        ("show", "one job, every field"),
        ("cancel", "cancel a job"),
        ("retry", "retry a job"),
    ):
        json_flag(actions.add_parser(name, help=what)).add_argument("id", type=int)

    queues = commands.add_parser("queues", help="list, pause and resume queues")
    queue_actions = queues.add_subparsers(dest="queues_command", required=True)
    json_flag(queue_actions.add_parser("list", help="every queue: paused, counts per state"))
    for name, what in (("pause", "stop claiming from a queue, everywhere"), ("resume", "claim again")):
        json_flag(queue_actions.add_parser(name, help=what)).add_argument("name", type=check_queue_name)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run a ``jobs`` or ``queues`` command; the exit code."""
    from skiplock.db.migrate import migrate_database
    from skiplock.tasks import load_registry

    registry = load_registry(settings.task_modules)  # the tasks' models check what is enqueued
    if settings.auto_migrate:
        await migrate_database(settings.direct_database_url(settings.database_url or ""))
    client = await Client.connect(
        settings.database_url or "",
        registry=registry,
        transaction_pooler=settings.transaction_pooler,
        listen_dsn=settings.listen_database_url,
    )
    try:
        if args.command == "jobs":
            await _jobs(client, args)
        else:
            await _queues(client, args)
    except NotFoundError as exc:
        return _failed(exc, EXIT_NOT_FOUND)
    except ConflictError as exc:
        return _failed(exc, EXIT_CONFLICT)
    finally:
        await client.close()
    return 0


async def _jobs(client: Client, args: argparse.Namespace) -> None:
    command = args.jobs_command
    if command == "enqueue":
        job = await client.enqueue(
            args.task,
            _json_object(args.args),
            queue=args.queue,
            priority=args.priority,
            delay_s=args.delay_s,
            max_attempts=args.max_attempts,
            unique_key=args.unique_key,
        )
        if args.json:
            _print_json(job)
        else:
            print(job.id)
            print(f"enqueued {job.task!r} as job {job.id} on queue {job.queue!r}", file=sys.stderr)
    elif command == "list":
        state = JobState(args.state) if args.state else None
        found = await client.list_jobs(state=state, queue=args.queue, task=args.task, limit=args.limit)
        _print_jobs(found, as_json=args.json)
    elif command == "show":
        job = await client.get(args.id)
        if args.json:
            _print_json(job)
        else:
            for field, value in job.model_dump(mode="json").items():
                shown = value if isinstance(value, str) or value is None else orjson.dumps(value).decode()
                print(f"{field}: {'' if shown is None else shown}")
    else:
        job = await (client.cancel(args.id) if command == "cancel" else client.retry(args.id))
        _print_jobs([job], as_json=args.json, one=True)


async def _queues(client: Client, args: argparse.Namespace) -> None:
    command = args.queues_command
    if command == "list":
        queues = await client.queues()
    else:
        queues = [await client.set_paused(args.name, paused=command == "pause")]
    if args.json:
        _print_json(queues if command == "list" else queues[0])
        return
    for queue in queues:
        print(f"{queue.name}\t{'paused' if queue.paused else 'active'}\t{_counts(queue)}")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentsError(f"--args is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidArgumentsError("--args must be a JSON object")
    return value


def _counts(queue: QueueInfo) -> str:
    return " ".join(f"{state.value}={count}" for state, count in sorted(queue.counts.items()) if count)


def _print_jobs(jobs: Sequence[Job], *, as_json: bool, one: bool = False) -> None:
    if as_json:
        _print_json(jobs[0] if one else list(jobs))
        return
    for job in jobs:
        fields = (job.id, job.state.value, job.task, job.queue, f"attempt {job.attempts}/{job.max_attempts}")
        print(*fields, f"{job.created_at:%Y-%m-%d %H:%M:%S}", sep="\t")


def _print_json(value: BaseModel | Sequence[BaseModel]) -> None:
    data = (
        [v.model_dump(mode="json") for v in value]
        if isinstance(value, Sequence)
        else value.model_dump(mode="json")
    )
    sys.stdout.write(orjson.dumps(data).decode() + "\n")


def _failed(exc: SkiplockError, code: int) -> int:
    print(f"skiplock: {exc.message}", file=sys.stderr)
    return code
