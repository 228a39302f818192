"""Schemathesis over /schema/openapi.json against a real ``skiplock serve``: requests generated
from the schema, valid ones and ones it says are invalid, never get a 5xx, and every answer's
status, content type, headers and body are those the schema documents."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.serving import served
from tests.support.workers import ROOT

PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])

#: The run's budget: examples per operation and phase, each phase run once to its end (about 2,000
#: cases here). No --max-time: under one, fuzzing draws new cases until the time is spent (20 s
#: then, for some 8% more cases on a fast machine), and on a slow one it cuts a phase short.
MAX_EXAMPLES = 5
ERRORS_METRIC = "skiplock_http_requests_error_total"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
#: A job's result and its event stream wait for the job to finish, and no worker runs the jobs
#: made here: the results are asked not to wait, the stream is left out. POST /fetch enqueues
#: (mode=task): inline, it would fetch the generated URLs, and an upstream's failure is a 502 or
#: 504 by design. Stopping a worker is left out: Schemathesis reuses the ids GET /workers answers,
#: and the server's own would stop it. Each has tests of its own.
CONFIG = """
[[operations]]
include-operation-id = ["GetJobResult", "GetWorkflowResult"]
parameters = { "query.wait" = "0" }

[[operations]]
include-operation-id = "Fetch"
parameters = { "query.mode" = "task" }

[[operations]]
include-operation-id = ["StreamJobEvents", "StopWorker"]
enabled = false
"""


@pytest.mark.slow
async def test_generated_requests_get_no_server_error_and_answers_the_schema_documents(
    dsn: str, tmp_path: Path
) -> None:
    # No worker (nothing runs what is enqueued: no generated URL is fetched or scraped), and only
    # the built-in tasks.
    async with served(dsn, tmp_path, WORKER="false", TASK_MODULES="") as app:
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        report = tmp_path / "report.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{app.url}/schema/openapi.json",
            "--mode",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--checks",
            CHECKS,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "20",
            "--request-timeout",  # generous: a loaded machine may be slow to answer
            "15",
            "--suppress-health-check",
            "too_slow",
            "--workers",  # one: hypothesis's lambda descriptions race in ast.parse on threads (3.11)
            "1",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
                "PYTHONPATH": PYTHONPATH,
            },
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        metrics = (await app.http.get("/metrics")).text
    assert process.returncode == 0, text[-8000:]
    # What the server itself counted: every 5xx it answered (Litestar's request metrics).
    server_errors = [line for line in metrics.splitlines() if line.startswith(ERRORS_METRIC + "{")]
    assert not server_errors, server_errors
    assert "skiplock_http_requests_total{" in metrics
    run = orjson.loads(report.read_bytes())
    assert (run["failures"], run["errors"]) == ([], []), text[-8000:]
    assert run["stop_reason"] == "completed", run["stop_reason"]  # every phase ran to its end
    assert run["operations"]["tested"] == run["operations"]["selected"] > 30, run["operations"]
    assert run["test_cases"]["generated"] > 500, run["test_cases"]
