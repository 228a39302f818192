"""skiplock.http.Client against a real ``skiplock serve`` with keys required: the in-process client's
methods answering the same models, and each error answer raised as skiplock's own exception."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from skiplock import JobCancelled, JobFailed, JobState, ResultTimeout, Step, WorkflowFailed, chain
from skiplock.auth import KeyStore, Scope
from skiplock.db import create_pool
from skiplock.db.admin import create_database, drop_database
from skiplock.errors import (
    AccessDenied,
    InvalidArgumentsError,
    InvalidStateError,
    JobNotFound,
    ServiceUnreachable,
    UnknownTaskError,
    WorkflowInvalid,
    WorkflowNotFound,
)
from skiplock.http import Client
from skiplock.queue import EnqueueRequest, Job, WorkflowInfo
from skiplock.tasks import EchoArgs
from tests.conftest import TEMPLATE
from tests.support.live import free_port
from tests.support.readme import readme_package
from tests.support.serving import Served, served


class Keys:
    def __init__(self, write: str, read: str) -> None:
        self.write, self.read = write, read


@pytest.fixture(scope="module")
async def server(
    pg_admin_dsn: str, template_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Served, Keys]]:
    """One server for the module (its start is the slow part), on a database of its own."""
    name = f"http_client_{os.getpid()}"
    dsn = await create_database(pg_admin_dsn, name, template=TEMPLATE)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        store = KeyStore(pool)
        _, write = await store.create("writer", [Scope.JOBS_READ, Scope.JOBS_WRITE])
        _, read = await store.create("reader", [Scope.JOBS_READ])
    finally:
        await pool.close()
    directory: Path = tmp_path_factory.mktemp("http-client")
    async with served(dsn, directory, AUTH="on", POLL_INTERVAL_S="0.2") as app:
        yield app, Keys(write, read)
    await drop_database(pg_admin_dsn, name)


@pytest.fixture
async def client(server: tuple[Served, Keys]) -> AsyncIterator[Client]:
    app, keys = server
    async with Client(app.url, api_key=keys.write) as remote:
        yield remote


async def test_enqueue_get_wait_and_list_answer_the_in_process_models(client: Client) -> None:
    job = await client.enqueue("echo", EchoArgs.model_validate({"n": 1}), priority=3)
    assert isinstance(job, Job)
    assert (job.task, job.state, job.priority, job.args, job.created) == (
        "echo",
        "queued",
        3,
        {"n": 1, "fail": False},
        True,
    )
    held = await client.enqueue("noop", delay_s=3600, unique_key="k1")  # live for an hour
    again = await client.enqueue("noop", unique_key="k1")
    assert (held.created, again.id, again.created) == (True, held.id, False)  # the live job holding it
    await client.cancel(held.id)

    assert await client.wait_for_result(job.id, timeout_s=20) == {"args": {"n": 1}, "upstream": {}}
    done = await client.get(job.id)
    assert (done.state, done.attempts, done.result) == (
        JobState.SUCCEEDED,
        1,
        {"args": {"n": 1}, "upstream": {}},
    )

    ids = await client.enqueue_many(
        [EnqueueRequest("echo", {"n": n}) for n in (3, 4)] + [EnqueueRequest("noop")]
    )
    assert len(ids) == 3
    assert ids == sorted(ids)
    assert [await client.wait_for_result(i, timeout_s=20) for i in ids[:2]] == [
        {"args": {"n": n}, "upstream": {}} for n in (3, 4)
    ]
    echoes = await client.list_jobs(task="echo", limit=10)
    assert [j.id for j in echoes] == [ids[1], ids[0], job.id]  # newest first
    assert [j.id for j in await client.list_jobs(task="echo", before_id=ids[0])] == [job.id]
    assert ids[2] in [j.id for j in await client.list_jobs(state=JobState.SUCCEEDED, queue="default")]


async def test_failures_cancels_retries_and_timeouts_raise_skiplocks_errors(client: Client) -> None:
    failing = await client.enqueue("always_fails", max_attempts=1)
    with pytest.raises(JobFailed) as failed:
        await client.wait_for_result(failing.id, timeout_s=20)
    assert not isinstance(failed.value, JobCancelled)
    assert failed.value.state == "failed"
    assert failed.value.error is not None
    assert failed.value.error.message == "boom on attempt 1"

    later = await client.enqueue("noop", delay_s=3600)
    with pytest.raises(ResultTimeout) as timed_out:
        await client.wait_for_result(later.id, timeout_s=0.3)
    assert timed_out.value.state == "queued"
    with pytest.raises(InvalidStateError, match="cannot retry") as not_retryable:
        await client.retry(later.id)
    assert not_retryable.value.extra["state"] == "queued"
    assert (await client.cancel(later.id)).state == JobState.CANCELLED
    with pytest.raises(JobCancelled):
        await client.wait_for_result(later.id, timeout_s=5)
    with pytest.raises(InvalidStateError, match="cannot cancel"):
        await client.cancel(later.id)
    retried = await client.retry(later.id)
    assert (retried.id, retried.state) == (later.id, JobState.QUEUED)


async def test_refusals_are_skiplocks_errors(client: Client, server: tuple[Served, Keys]) -> None:
    with pytest.raises(UnknownTaskError, match="unknown task"):
        await client.enqueue("no_such_task")
    with pytest.raises(InvalidArgumentsError) as invalid:
        await client.enqueue("wait", {"seconds": -1})
    assert invalid.value.extra["status"] == 422
    assert invalid.value.extra["errors"]
    before = len(await client.list_jobs(limit=500))
    with pytest.raises(InvalidArgumentsError, match="job 1") as batch:
        await client.enqueue_many([EnqueueRequest("noop"), EnqueueRequest("wait", {"seconds": "x"})])
    assert batch.value.extra["index"] == 1
    assert len(await client.list_jobs(limit=500)) == before  # nothing written
    with pytest.raises(JobNotFound):
        await client.get(10**12)

    app, keys = server
    async with Client(app.url, api_key=keys.read) as reader:
        assert (await reader.list_jobs(limit=1))[0].id > 0
        with pytest.raises(AccessDenied) as denied:
            await reader.enqueue("noop")
        assert denied.value.extra["status"] == 403
    async with Client(app.url) as anonymous:
        with pytest.raises(AccessDenied):
            await anonymous.get(1)
    async with Client(f"http://127.0.0.1:{free_port()}", timeout_s=2) as nowhere:
        with pytest.raises(ServiceUnreachable):
            await nowhere.get(1)


async def test_the_readmes_remote_example_runs_as_written(
    server: tuple[Served, Keys], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, keys = server
    with readme_package(tmp_path, monkeypatch) as myapp:
        assert await myapp["remote"].echo_remotely(app.url, keys.write) == {
            "args": {"greeting": "hello"},
            "upstream": {},
        }


async def test_workflows_start_wait_fail_and_refuse_as_in_process(client: Client) -> None:
    flow = chain(Step("a", "echo", {"x": 1}), Step("b", "echo", {"y": 2}), name="pair")
    info = await client.start(flow)
    assert isinstance(info, WorkflowInfo)
    assert info.steps is not None
    assert (info.name, info.steps_total, [s.name for s in info.steps]) == ("pair", 2, ["a", "b"])
    result = await client.wait_for_workflow(info.id, timeout_s=20)
    assert result == {"b": {"args": {"y": 2}, "upstream": {"a": {"args": {"x": 1}, "upstream": {}}}}}
    assert (await client.workflow(info.id)).state == "succeeded"
    with pytest.raises(InvalidStateError):
        await client.cancel_workflow(info.id)

    failing = await client.start(chain(Step("a", "echo", {"fail": True}), Step("b", "echo")))
    with pytest.raises(WorkflowFailed) as failed:
        await client.wait_for_workflow(failing.id, timeout_s=20)
    assert failed.value.state == "failed"
    assert failed.value.error is not None
    assert (failed.value.error.step, failed.value.error.state) == ("a", "failed")
    assert (await client.retry_workflow(failing.id)).state == "running"

    with pytest.raises(WorkflowInvalid, match="no_such_task"):
        await client.start(chain(Step("a", "no_such_task")))
    with pytest.raises(WorkflowNotFound):
        await client.workflow(10**12)
