"""Every shell block of the README (```sh, ```bash) runs as written, top to bottom, as a new user
would: one real ``skiplock serve`` (the built-in tasks only, as ``make run``) on a free port, each
command in bash (``set -euo pipefail``), its exit status 0, every curl's HTTP status 2xx unless the
README shows another, and where the README shows an answer (``# → 201 {...}``) the answer has that
shape: its keys (all of them unless ``...``/``…`` says there are more), its strings and counts
(ids and the moment's values by type only).

What the test changes, said here once: the port (8000 → the server's); the external hosts of the
fetch examples (a local aiohttp server, which the server may reach: SKIPLOCK_FETCH_ALLOW_PRIVATE);
the example worker id and API key (the real ones: a ``skiplock worker`` runs for the Workers block);
``websocat``, not installed here (tests/support/websocat.py stands in); the Commands synopsis,
expanded into its commands (every option checked by the CLI's parser, those without placeholders
run). A reader types slower than bash runs: where a command needs the one before it to have got
somewhere, SETTLE waits for that. A command that cannot run here is in EXCUSED with the reason; any
other command, a new one included, is run, and an entry naming no README command fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from skiplock.cli import _parser
from tests.support.live import free_port
from tests.support.serving import Served, served
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, spawn, stop_worker

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
SHELL = {"sh", "bash", "shell", "console"}
#: Fenced blocks that are neither Python nor shell, by their first line.
NOT_CODE = {"clients ──REST──▶ Litestar app ──asyncpg pool──▶ PostgreSQL ── jobs, queues"}
#: The section whose block is a synopsis of the CLI: ``[--flag X]`` optional, ``a | b`` alternatives.
SYNOPSIS_SECTION = "Commands"

#: Commands (as written, or the start of one) that this test does not run, and why.
EXCUSED = {
    "make run": "serves until Ctrl-C; the test runs the `skiplock serve` it starts, on the test database",
    "make test": "the whole suite, this test included",
    "SKIPLOCK_TASK_MODULES=examples.fastapi_app.tasks skiplock worker &": (
        "a worker left running for the FastAPI example; tests/integration/test_fastapi_example.py runs it"
    ),
    "uvicorn examples.fastapi_app.app:app": "serves until stopped; test_fastapi_example.py drives the app",
    "uvicorn --factory examples.litestar_app.app:create_app": (
        "serves until stopped; test_litestar_example.py runs the app in-process"
    ),
    "docker compose": "no Docker engine here",
    'curl -H "Authorization: Bearer sk_…" localhost:8080/queues': "nginx of the compose deployment",
    "skiplock serve": "serves until stopped: the test's server is this command (flags checked by the parser)",
    "skiplock worker": "runs until stopped: the Workers block runs one (flags checked by the parser)",
    "skiplock keys create --name N": "placeholders; the Production block runs it for real",
    "skiplock keys revoke NAME": "a placeholder; the Production block runs it for real",
}
#: Commands that stream until stopped: run for this long, and still running then is a pass.
FOLLOW = {"websocat 'ws://localhost:8000/ws/events?queue=media'": 1.0}
#: Values that are the moment's: compared by type (as ids are).
ILLUSTRATIVE = {"running", "heartbeat_age_s"}
#: Values of the synopsis' placeholders, for the parser's check of every flag.
PLACEHOLDERS = {
    "H": "127.0.0.1",
    "P": "8000",
    "N": "2",
    "S": "1",
    "NAME": "ci",
    "Q": "media",
    "T": "sleep",
    "K": "k",
}

CURL = 'curl() { command curl --max-time 40 -w "\\n@@HTTP %{http_code}@@\\n" "$@"; }\n'
POSTS = [{"userId": 1, "id": n, "title": f"post {n}", "body": "…"} for n in range(1, 101)]
PAGE = "<html><head><title>Example</title></head><body><h1>Example</h1><a href='/more'>More</a></body></html>"


@dataclass
class Command:
    section: str
    line: int
    text: str  # as written, comments removed
    comment: str = ""  # its own comment and the `# →` lines after it

    def unbalanced(self) -> bool:
        opened = sum(self.comment.count(c) for c in "{[")
        return opened > sum(self.comment.count(c) for c in "}]")


def blocks() -> list[tuple[str, int, str]]:
    """(section, line of the first code line, code) of every shell block."""
    found: list[tuple[str, int, str]] = []
    section, lang, start = "", None, 0
    code: list[str] = []
    for number, line in enumerate(README.read_text(encoding="utf-8").split("\n"), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, code = line[3:].strip(), number + 1, []
                continue
            if lang in SHELL:
                found.append((section, start, "\n".join(code)))
            else:
                assert lang == "python" or (lang == "" and code and code[0] in NOT_CODE), (
                    f"README.md:{start - 1}: a ```{lang} block neither Python nor shell: label it"
                )
            lang = None
        elif lang is not None:
            code.append(line)
        elif line.startswith("#"):
            section = line.lstrip("#").strip()
    return found


def split_comment(text: str) -> tuple[str, str, bool]:
    """(the code, its comments, whether the command is complete) of one command's lines."""
    code: list[str] = []
    comments: list[str] = []
    quote = ""
    for line in text.split("\n"):
        kept = []
        i = 0
        while i < len(line):
            c = line[i]
            if quote:
                if c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c == "#" and (i == 0 or line[i - 1].isspace()):
                comments.append(line[i + 1 :].strip())
                break
            kept.append(c)
            i += 1
        code.append("".join(kept).rstrip())
    joined = "\n".join(code).strip()
    return joined, " ".join(comments), not quote and not joined.endswith("\\")


def commands(section: str, start: int, code: str) -> list[Command]:
    found: list[Command] = []
    pending: list[str] = []
    for number, raw in enumerate(code.split("\n"), start):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            text = stripped.lstrip("#").strip()
            if found and text and (text.startswith("→") or found[-1].unbalanced()):
                found[-1].comment += " " + text
            continue
        pending.append(raw)
        text, comment, complete = split_comment("\n".join(pending))
        if complete:
            found.append(Command(section, number - len(pending) + 1, text, comment))
            pending = []
    assert not pending, f"README.md:{start}: a command never ends"
    return found


def expand_synopsis(command: Command) -> list[tuple[str, str]]:
    """The synopsis line as (command to run, command with every option for the parser)."""
    line = command.text
    prefix = " ".join(line.split()[:2])
    alternatives = [part.strip() for part in line.split(" | ")]
    out = []
    for n, alternative in enumerate(alternatives):
        full = alternative if n == 0 else f"{prefix} {alternative}"
        run = re.sub(
            r"\s*\[([^\]]*)\]",
            lambda m: "" if re.search(r"\b[A-Z]+\b", m.group(1)) else " " + m.group(1),
            full,
        )
        every = re.sub(r"\[([^\]]*)\]", r"\1", full)
        out.append((run.strip(), every))
    return out


def every_command() -> list[Command]:
    found: list[Command] = []
    for section, start, code in blocks():
        for command in commands(section, start, code):
            if section != SYNOPSIS_SECTION:
                found.append(command)
                continue
            for run, every in expand_synopsis(command):
                argv = [PLACEHOLDERS.get(word, word) for word in shlex.split(every)[1:]]
                check_parses(argv, command)
                found.append(Command(section, command.line, run, command.comment))
    return found


def check_parses(argv: list[str], command: Command) -> None:
    """The CLI's own parser takes the synopsis with every option (exits 0 only for --version)."""
    code: object = 0
    try:
        _parser().parse_args(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 0, f"README.md:{command.line}: `skiplock {' '.join(argv)}` does not parse"


def excuse_of(text: str) -> str | None:
    for start, why in EXCUSED.items():
        if text == start or text.startswith(start + " ") or text.startswith(start + "\n"):
            return why
    return None


# -- the answers the README shows --------------------------------------------------------------

ANY = object()
DECODER = json.JSONDecoder()


@dataclass
class Obj:
    fields: dict[str, Any]
    open: bool


@dataclass
class Arr:
    items: list[Any]
    open: bool


@dataclass
class Loose:
    """JSON as the README writes answers: ``...`` or ``…`` for more keys, items or any value, and
    words where a value is described (``[five next fire times]``)."""

    text: str
    at: int = 0

    def skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def ellipsis(self) -> bool:
        self.skip()
        for dots in ("...", "…"):
            if self.text.startswith(dots, self.at):
                self.at += len(dots)
                return True
        return False

    def value(self) -> Any:
        self.skip()
        c = self.text[self.at]
        if c in "{[":
            return self.container(c)
        if self.ellipsis():
            return ANY
        if c == '"':
            text, self.at = DECODER.raw_decode(self.text, self.at)
            return text
        token = re.compile(r"-?\d+(?:\.\d+)?|true|false|null").match(self.text, self.at)
        if token:
            self.at = token.end()
            return json.loads(token.group())
        words = re.compile(r"[^,\]}]+").match(self.text, self.at)
        assert words, f"cannot read {self.text[self.at :]!r}"
        self.at = words.end()
        return ANY

    def container(self, opening: str) -> Obj | Arr:
        closing = "}" if opening == "{" else "]"
        self.at += 1
        fields: dict[str, Any] = {}
        items: list[Any] = []
        open_ = False
        while True:
            self.skip()
            if self.text[self.at] == closing:
                self.at += 1
                break
            if self.ellipsis():
                open_ = True
            elif opening == "{":
                key, self.at = DECODER.raw_decode(self.text, self.text.index('"', self.at))
                self.at = self.text.index(":", self.at) + 1
                fields[key] = self.value()
            else:
                item = self.value()
                open_ = open_ or item is ANY
                if item is not ANY:
                    items.append(item)
            self.skip()
            if self.text[self.at] == ",":
                self.at += 1
        return Obj(fields, open_) if opening == "{" else Arr(items, open_)


def mismatches(expected: Any, actual: Any, key: str = "", path: str = "$") -> list[str]:
    if expected is ANY or expected == "…":
        return []
    if key == "id" or key.endswith("_id") or key in ILLUSTRATIVE:
        same = isinstance(expected, (Arr, list)) and isinstance(actual, list)
        number = isinstance(expected, (int, float)) and isinstance(actual, (int, float))
        if same or number or type(expected) is type(actual):
            return [] if not isinstance(expected, Obj) else mismatches_obj(expected, actual, path)
        return [f"{path}: {actual!r} is not like {expected!r}"]
    if isinstance(expected, Obj):
        return mismatches_obj(expected, actual, path)
    if isinstance(expected, Arr):
        if not isinstance(actual, list):
            return [f"{path}: {actual!r} is not a list"]
        found = (
            []
            if expected.open or len(actual) == len(expected.items)
            else [f"{path}: {len(actual)} items, the README shows {len(expected.items)} (no `...`)"]
        )
        for n, item in enumerate(expected.items):
            if not any(not mismatches(item, a, key, path) for a in actual):
                found.append(f"{path}[{n}]: no item like the README's ({actual!r:.300})")
        return found
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(actual, (int, float)) and not isinstance(actual, bool) and actual == expected:
            return []
    elif type(actual) is type(expected) and actual == expected:
        return []
    return [f"{path}: {actual!r}, the README shows {expected!r}"]


def mismatches_obj(expected: Obj, actual: Any, path: str) -> list[str]:
    if not isinstance(actual, dict):
        return [f"{path}: {actual!r:.200} is not an object"]
    found: list[str] = []
    for key, value in expected.fields.items():
        if key not in actual:
            found.append(f"{path}: no {key!r}")
        else:
            found += mismatches(value, actual[key], key, f"{path}.{key}")
    extra = sorted(set(actual) - set(expected.fields))
    if extra and not expected.open:
        found.append(f"{path}: also has {extra} (the README shows no `...`)")
    return found


def expectation(comment: str) -> tuple[int | None, Any]:
    """The HTTP status and the answer a command's comment shows, if it shows them."""
    body = re.search(r"(?:^|→\s*|[1-5]\d\d\s+|:\s+)([\[{])", comment)
    before = comment[: body.start(1)] if body else comment
    status = re.search(r"(?:^|→\s*|:\s+)([1-5]\d\d)\b", before)
    shown = None
    if body:
        reader = Loose(comment, body.start(1))
        shown = reader.value()
    return (int(status.group(1)) if status else None), shown


# -- running them --------------------------------------------------------------------------


@dataclass
class Run:
    server: Served
    upstream: str
    directory: Path
    env: dict[str, str]
    names: dict[str, str] = field(default_factory=dict)  # what the test substitutes
    ran: list[str] = field(default_factory=list)

    def substitute(self, text: str) -> str:
        replacements = {
            "localhost:8000": self.server.url.replace("http://127.0.0.1", "localhost"),
            "127.0.0.1:8000": self.server.url.removeprefix("http://"),
            "https://jsonplaceholder.typicode.com": self.upstream,
            "https://example.org": self.upstream,
        }
        for old, new in replacements.items():
            text = text.replace(old, new)
        for old, new in self.names.items():  # whole words only: job 12 is not 127.0.0.1
            text = re.sub(rf"(?<![\w.:]){re.escape(old)}(?![\w.:])", new, text)
        return text

    async def get(self, path: str) -> Any:
        response = await self.server.http.get(path)
        return response.json() if response.status_code == 200 else None

    async def until(self, path: str, check: Callable[[Any], bool]) -> None:
        async def reached() -> bool:
            return check(await self.get(path))

        await wait_until(reached, 20, 0.05)


def state_is(*states: str) -> Callable[[Any], bool]:
    return lambda job: job is not None and job.get("state") in states


def newest_in(*states: str) -> Callable[[Any], bool]:
    return lambda page: bool(page and page["items"] and page["items"][0]["state"] in states)


FINAL = ("succeeded", "failed", "cancelled")
#: Before these commands (as written), what a reader would have seen happen first.
SETTLE: dict[str, Callable[[Run], Awaitable[None]]] = {
    "curl -s -X POST localhost:8000/jobs/2/cancel": lambda r: r.until("/jobs/2", state_is("running")),
    "curl -s -X POST localhost:8000/jobs/2/retry": lambda r: r.until("/jobs/2", state_is("cancelled")),
    "curl -s -X POST localhost:8000/workflows/2/cancel": lambda r: r.until(
        "/workflows/2", lambda flow: flow is not None and flow["steps"][0]["state"] == "running"
    ),
    "curl -s -X POST localhost:8000/workflows/2/retry": lambda r: r.until(
        "/workflows/2",
        lambda flow: (
            flow is not None
            and flow["state"] == "cancelled"
            and all(step["state"] in FINAL for step in flow["steps"])
        ),
    ),
    "curl -s 'localhost:8000/pages?url=https://example.org/'": lambda r: r.until(
        "/jobs?task=scrape", newest_in(*FINAL)
    ),
    "curl -s localhost:8000/imports/1": lambda r: r.until("/imports/1", state_is("succeeded", "failed")),
    "skiplock jobs cancel 12": lambda r: r.until(f"/jobs/{r.names['12']}", state_is("running")),
    "skiplock jobs retry 12": lambda r: r.until(f"/jobs/{r.names['12']}", state_is("cancelled")),
}


async def worker_id(run: Run) -> None:
    async def found() -> bool:
        workers = await run.get("/workers") or []
        ids = [w["id"] for w in workers if w["role"] == "worker" and w["state"] == "online"]
        if ids:
            run.names["web-1:4242:9f1c2a"] = ids[0]
        return bool(ids)

    await wait_until(found, 30, 0.1)


#: Values printed by one command that later ones use: (the name the README uses, a pattern).
CAPTURE = {
    "skiplock jobs enqueue sleep --args '{\"seconds\": 5}'": ("12", r"^(\d+)$"),
    "skiplock keys create --name ci --scopes jobs:read,jobs:write": ("sk_…", r"^(sk_\S+)$"),
}
#: The sections of ``skiplock`` commands (most of a second of start-up each) run beside the HTTP
#: ones, each in order: they name no id the others make, nor the reverse, and the one that makes a
#: job waits until the walk-through has made its jobs 1 and 2 (CLI_AFTER).
CLI_SECTIONS = ("Commands", "Production")
MAKES_JOBS = {"skiplock jobs enqueue sleep --args '{\"seconds\": 5}'"}
CLI_AFTER = "curl -s -X POST localhost:8000/jobs/2/retry"
#: Before the first command of these sections, what their examples assume.
BEFORE_SECTION: dict[str, Callable[[Run], Awaitable[None]]] = {"Workers": worker_id}


async def execute(run: Run, command: Command) -> None:
    where = f"README.md:{command.line} ({command.section}): {command.text}"
    text = run.substitute(command.text)
    follow = FOLLOW.get(command.text)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "set -euo pipefail\n" + CURL + text,
        cwd=run.directory,
        env=run.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), follow or 60)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = await process.communicate()
        assert follow, f"{where}: no answer in 60 s"
        assert b"Error" not in err, f"{where}: {err.decode()[-1000:]}"
        assert b"closed" not in err, f"{where}: {err.decode()[-1000:]}"
        run.ran.append(command.text)
        return
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 0, f"{where}: exit {process.returncode}\n{stdout[-1000:]}\n{stderr[-2000:]}"
    expected_status, shown = expectation(run.substitute(command.comment))
    statuses = re.findall(r"@@HTTP (\d{3})@@", stdout)
    body = re.split(r"\n?@@HTTP \d{3}@@\n?", stdout)[0]
    for status in map(int, statuses):
        if expected_status is not None:
            assert status == expected_status, (
                f"{where}: {status}, the README says {expected_status}: {body[:500]}"
            )
        else:
            assert 200 <= status < 300, f"{where}: {status}: {body[:500]}"
    if shown is not None:
        found = mismatches(shown, json.loads(body))
        assert not found, f"{where}:\n" + "\n".join(found) + f"\nanswer: {body[:1500]}"
    if command.text in CAPTURE:
        name, pattern = CAPTURE[command.text]
        captured = re.search(pattern, stdout, re.M)
        assert captured, f"{where}: printed no {pattern}: {stdout}"
        run.names[name] = captured.group(1)
    run.ran.append(command.text)


@contextlib.asynccontextmanager
async def upstream_server() -> AsyncIterator[str]:
    """jsonplaceholder.typicode.com's /posts and example.org's page, on a local port."""

    async def posts(_request: web.Request) -> web.Response:
        return web.json_response(POSTS)

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/posts", posts)
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def command_env(dsn: str, bin_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SKIPLOCK_LOG_FORMAT": "json",
        "SKIPLOCK_LOG_LEVEL": "warning",
    }
    for name in ("SKIPLOCK_TEST_DATABASE_URL", "SKIPLOCK_TASK_MODULES"):
        env.pop(name, None)
    return env


def shims(directory: Path) -> Path:
    """``skiplock`` (this checkout's) and ``websocat`` (a stand-in) on the commands' PATH."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for name, module in (("skiplock", "skiplock"), ("websocat", "tests.support.websocat")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m {module} "$@"\n')
        shim.chmod(0o755)
    return bin_dir


def test_every_shell_command_is_run_or_excused() -> None:
    """The stale-entry half of the rule, without a server: each excuse, settle, follow and
    capture names a command that is in the README."""
    texts = [c.text for c in every_command()]
    for table in (EXCUSED, SETTLE, FOLLOW, CAPTURE, MAKES_JOBS, {CLI_AFTER}):
        for entry in table:
            assert any(t == entry or t.startswith(entry + " ") for t in texts), f"no README command {entry!r}"
    assert SYNOPSIS_SECTION in {c.section for c in every_command()}


async def test_the_readme_shell_blocks_run_as_written(dsn: str, tmp_path: Path) -> None:
    todo = every_command()
    assert len(todo) > 40, "the README's shell blocks were not found"
    bin_dir = shims(tmp_path)
    worker = spawn(dsn, "worker", TASK_MODULES="", SHUTDOWN_GRACE_S="1")  # the Workers block's
    try:
        async with (
            upstream_server() as upstream,
            served(
                dsn, tmp_path, TASK_MODULES="", FETCH_ALLOW_PRIVATE="true", SHUTDOWN_GRACE_S="1"
            ) as server,
        ):
            run = Run(server, upstream, tmp_path, command_env(dsn, bin_dir))
            excused: list[str] = []
            walked = asyncio.Event()

            async def lane(commands: list[Command]) -> None:
                section = ""
                for command in commands:
                    if command.text in MAKES_JOBS:
                        await walked.wait()
                    if command.section != section:
                        section = command.section
                        if section in BEFORE_SECTION:
                            await BEFORE_SECTION[section](run)
                    if excuse_of(command.text):
                        excused.append(command.text)
                        continue
                    placeholder = re.search(r"(?:^|\s)[A-Z]+(?:\s|$)", command.text)
                    if placeholder and command.section == SYNOPSIS_SECTION:
                        pytest.fail(f"README.md:{command.line}: `{command.text}` has placeholders: excuse it")
                    if command.text in SETTLE:
                        await SETTLE[command.text](run)
                    await execute(run, command)
                    if command.text == CLI_AFTER:
                        walked.set()

            async with asyncio.TaskGroup() as lanes:  # one failing stops the others
                lanes.create_task(lane([c for c in todo if c.section not in CLI_SECTIONS]))
                for section in CLI_SECTIONS:
                    lanes.create_task(lane([c for c in todo if c.section == section]))
            # The Workers block's last command stopped that worker: it exited as on SIGTERM.
            assert await asyncio.to_thread(worker.wait, 15) == 0
    finally:
        await asyncio.to_thread(stop_worker, worker)
    assert len(run.ran) + len(excused) == len(todo)


def test_loose_answers_are_read_as_the_readme_means() -> None:
    """The reading of shown answers can fail: a missing key, another state, a list's length."""
    shown = Loose('{"id": 1, "state": "queued", "items": [...], "next": "…", ...}').value()
    assert not mismatches(shown, {"id": 7, "state": "queued", "items": [1], "next": None, "x": 1})
    assert mismatches(shown, {"id": 7, "state": "running", "items": [], "next": "a"})
    assert mismatches(shown, {"state": "queued", "items": [], "next": "a"})
    exact = Loose('{"items": [{"line_no": 3}], "next_cursor": null}').value()
    assert mismatches(exact, {"items": [{"line_no": 3}], "next_cursor": None, "more": 1})
    assert mismatches(exact, {"items": [{"line_no": 3}, {"line_no": 4}], "next_cursor": None})
    assert not mismatches(Loose("[five next fire times]").value(), ["a", "b"])
    assert expectation("→ 202; the job ends") == (202, None)
    assert expectation('answers when it ends: 200 {"a": 1}')[0] == 200
    assert expectation('state, attempts, progress {"fraction": 0.4, ...}, result')[1] is None
