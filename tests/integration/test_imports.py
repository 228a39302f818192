"""CSV imports through the app: upload, the import_csv job, failed rows, limits and re-runs."""

from __future__ import annotations

import asyncio
import importlib
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from skiplock.app import create_app
from skiplock.db import create_pool
from skiplock.queue import Client as EngineClient
from skiplock.queue import Context, JobInfo
from skiplock.tasks import ImportArgs, import_csv
from skiplock.tasks.import_csv.rows import Header
from tests.conftest import make_settings
from tests.support.live import app_client, live_server, serve
from tests.support.waiting import wait_until

Client = AsyncTestClient[Any]
import_module = importlib.import_module("skiplock.tasks.import_csv.task")
HEADER = "sku,name,category,price,quantity,updated_at\n"
CSV = {"content-type": "text/csv"}


@pytest.fixture
async def api(dsn: str, registry: Any) -> AsyncIterator[Client]:
    async with app_client(make_settings(dsn), registry) as client:
        yield client


@pytest.fixture
async def api_no_worker(dsn: str, registry: Any) -> AsyncIterator[Client]:
    async with app_client(make_settings(dsn, worker=False), registry) as client:
        yield client


async def upload(api: Client, body: bytes | str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await api.post("/imports", content=body, headers=headers or CSV)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    assert created["job"]["task"] == "import_csv"
    assert created["job"]["args"] == {"import_id": created["import_id"]}
    return created


async def finished_import(api: Client, import_id: int, timeout: float = 30) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/imports/{import_id}")).json()
        return body if body["state"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = await wait_until(done, timeout)
    return result


async def finished_job(api: Client, job_id: int) -> dict[str, Any]:
    """The job once final: the import records its outcome a moment before the job does."""

    async def done() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/jobs/{job_id}")).json()
        return body if body["state"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = await wait_until(done, 10)
    return result


async def import_csv_text(api: Client, body: bytes | str, state: str = "succeeded") -> dict[str, Any]:
    created = await upload(api, body)
    info = await finished_import(api, created["import_id"])
    assert info["state"] == state, info
    return info


async def items(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch("SELECT sku, name, category, price, quantity, updated_at FROM items ORDER BY sku")
    return [tuple(r) for r in rows]


async def failures(db: asyncpg.Connection, import_id: int) -> list[tuple[int, str, str]]:
    rows = await db.fetch(
        "SELECT line_no, raw, reason FROM failed_rows WHERE import_id = $1 ORDER BY line_no", import_id
    )
    return [(r["line_no"], r["raw"], r["reason"]) for r in rows]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def test_every_kind_of_bad_row_fails_alone_and_the_good_rows_load(
    api: Client, db: asyncpg.Connection
) -> None:
    body = (
        HEADER.encode()
        + b"A1,Apple,fruit,1.50,10,2024-01-02T03:04:05Z\n"
        + b"A2,Pear,fruit,2,5\n"  # 2: wrong column count
        + b" ,Nameless,x,1,1,2024-01-01\n"  # 4: empty sku
        + b"A3,Plum,fruit,abc,1,2024-01-01\n"  # 5: bad number
        + b"A4,Fig,fruit,-0.01,1,2024-01-01\n"  # 6: negative price
        + b"A5,Kiwi,fruit,1,-2,2024-01-01\n"  # 7: negative quantity
        + b"A6,Lime,fruit,1,2,not a date\n"  # 8: bad date
        + b"A7,Caf\xe9,drink,1,2,2024-01-01\n"  # 9: bad encoding (latin-1)
        + b"A8,Date,fruit,1,2.5,2024-01-01\n"  # 10: quantity not an integer
        + b"A9,Nan,fruit,NaN,2,2024-01-01\n"  # 11: NaN price
        + b"A10,Big,fruit,12345678901,2,2024-01-01\n"  # 12: price overflows numeric(12,2)
        + b"A11,Caf\xc3\xa9,drink,0,0,\n"  # 13: good, empty updated_at takes the import's time
        + b"A12,Melon,,3.456,7,2024-06-01 12:00:00+02\n"  # 14: good, empty category
    )
    created = await upload(api, body)
    info = await finished_import(api, created["import_id"])
    assert info["state"] == "succeeded", info
    assert (info["rows"], info["loaded"], info["failed"]) == (13, 3, 10)
    job = await finished_job(api, created["job"]["id"])
    assert job["result"] == {"import_id": created["import_id"], "rows": 13, "loaded": 3, "failed": 10}

    import_id = created["import_id"]
    created_at = datetime.fromisoformat(info["created_at"])
    assert await failures(db, import_id) == [
        (3, "A2,Pear,fruit,2,5", "expected 6 columns, got 5"),
        (4, " ,Nameless,x,1,1,2024-01-01", "empty sku"),
        (5, "A3,Plum,fruit,abc,1,2024-01-01", 'bad price: invalid input syntax for type numeric: "abc"'),
        (6, "A4,Fig,fruit,-0.01,1,2024-01-01", "negative price"),
        (7, "A5,Kiwi,fruit,1,-2,2024-01-01", "negative quantity"),
        (
            8,
            "A6,Lime,fruit,1,2,not a date",
            'bad updated_at: invalid input syntax for type timestamp with time zone: "not a date"',
        ),
        (9, "A7,Caf\\xe9,drink,1,2,2024-01-01", "bad encoding: not UTF-8"),
        (10, "A8,Date,fruit,1,2.5,2024-01-01", 'bad quantity: invalid input syntax for type integer: "2.5"'),
        (11, "A9,Nan,fruit,NaN,2,2024-01-01", "bad price: not a number"),
        (12, "A10,Big,fruit,12345678901,2,2024-01-01", "bad price: numeric field overflow"),
    ]
    assert await items(db) == [
        ("A1", "Apple", "fruit", Decimal("1.50"), 10, at("2024-01-02T03:04:05+00:00")),
        ("A11", "Café", "drink", Decimal("0.00"), 0, created_at),
        ("A12", "Melon", None, Decimal("3.46"), 7, at("2024-06-01T12:00:00+02:00")),
    ]
    assert await db.fetchval("SELECT count(*) FROM import_chunks") == 0  # deleted once loaded


async def test_columns_in_any_order_optional_ones_absent_and_unknown_ones_ignored(
    api: Client, db: asyncpg.Connection
) -> None:
    info = await import_csv_text(api, " Quantity ,NOTES,Price,SKU,Name\n3,hello,9.99,B1,Bolt\n0,,0,B2,Nut\n")
    assert (info["rows"], info["loaded"], info["failed"]) == (2, 2, 0)
    created_at = datetime.fromisoformat(info["created_at"])
    assert await items(db) == [
        ("B1", "Bolt", None, Decimal("9.99"), 3, created_at),
        ("B2", "Nut", None, Decimal("0.00"), 0, created_at),
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            "sku,name,category\nA,a,b\n",
            "header row lacks required columns price, quantity (found: sku, name, category)",
        ),
        (
            "name,price,quantity\nx,1,1\n",
            "header row lacks required column sku (found: name, price, quantity)",
        ),
        ("\r\n\n", "empty file: no header row"),
        ("\ufeff", "empty file: no header row"),
    ],
)
async def test_file_without_a_usable_header_fails_the_import_at_once_with_the_reason(
    api: Client, db: asyncpg.Connection, body: str, error: str
) -> None:
    created = await upload(api, body)
    info = await finished_import(api, created["import_id"])
    assert info["state"] == "failed"
    assert info["error"] == error
    job = await finished_job(api, created["job"]["id"])
    assert job["state"] == "failed"
    assert job["attempts"] == 1  # permanent: not retried
    assert job["errors"][-1]["message"] == error
    assert await db.fetchval("SELECT count(*) FROM items") == 0
    assert await db.fetchval("SELECT count(*) FROM import_chunks") == 0


async def test_empty_upload_is_a_400_and_writes_nothing(api: Client, db: asyncpg.Connection) -> None:
    response = await api.post("/imports", content=b"", headers=CSV)
    assert_error(response, 400, "empty upload")
    await assert_nothing_stored(db)


async def test_header_only_file_succeeds_with_no_rows(api: Client, db: asyncpg.Connection) -> None:
    info = await import_csv_text(api, "sku,name,price,quantity")
    assert (info["rows"], info["loaded"], info["failed"]) == (0, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM items") == 0


async def test_bom_and_crlf_line_endings(api: Client, db: asyncpg.Connection) -> None:
    body = b"\xef\xbb\xbfsku,name,price,quantity\r\nC1,Cup,1,1\r\nC2,Can,2,2,extra\r\nC3,Cap,3,3"
    info = await import_csv_text(api, body)
    assert (info["rows"], info["loaded"], info["failed"]) == (3, 2, 1)
    assert [r[:2] for r in await items(db)] == [("C1", "Cup"), ("C3", "Cap")]
    assert await failures(db, info["id"]) == [(3, "C2,Can,2,2,extra", "expected 4 columns, got 5")]


async def test_quoted_fields_keep_commas_quotes_and_newlines_and_line_numbers_stay_physical(
    api: Client, db: asyncpg.Connection
) -> None:
    body = (
        'sku,name,price,quantity\nQ1,"Nuts, salted",1,1\nQ2,"Two\nline ""name""",2,2\n'
        'Q3,"bad\nprice",x,3\nQ4,Last,4,4\n'
    )
    info = await import_csv_text(api, body)
    assert (info["rows"], info["loaded"], info["failed"]) == (4, 3, 1)
    assert [r[:2] for r in await items(db)] == [
        ("Q1", "Nuts, salted"),
        ("Q2", 'Two\nline "name"'),
        ("Q4", "Last"),
    ]
    assert await failures(db, info["id"]) == [
        (5, 'Q3,"bad\nprice",x,3', 'bad price: invalid input syntax for type numeric: "x"')
    ]


async def test_duplicate_skus_the_last_valid_row_in_the_file_wins(
    api: Client, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_module, "BATCH_ROWS", 3)  # duplicates within and across batches
    body = (
        "sku,name,price,quantity\n"
        "D1,first,1,1\nD2,only,1,1\nD1,second,2,2\n"  # batch 1: D1 twice
        "D1,third,3,3\nD3,x,1,1\nD1,bad,-1,1\n"  # batch 2: a later valid D1, then an invalid one
        "D2,again,5,5\n"
    )
    info = await import_csv_text(api, body)
    assert (info["rows"], info["loaded"], info["failed"]) == (7, 6, 1)
    assert [r[:4] for r in await items(db)] == [
        ("D1", "third", None, Decimal("3.00")),
        ("D2", "again", None, Decimal("5.00")),
        ("D3", "x", None, Decimal("1.00")),
    ]
    # A later import updates what an earlier one loaded.
    await import_csv_text(api, "sku,name,price,quantity\nD3,updated,9,9\n")
    assert [r[:2] for r in await items(db)][2] == ("D3", "updated")


def boundary_file() -> str:
    prices = ["1", "9999999999.99", "99999999999", "1.005", "-1", " 1", "1e3", "NaN", "1.", "0.5"]
    quantities = ["1", "2147483647", "2147483648", "+1", " 2"]
    times = [
        "",
        "2024-05-01T12:00:00Z",
        "2024-02-30T00:00:00",
        "2024-05-01T24:00:00",
        "2024-05-01T12:00:00+16:00",
    ]
    times += [
        "2024-05-01 12:00:00.1234567",
        "now",
        "epoch",
        " 2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00-15:59",
    ]
    times += ["05/01/2024", "2024-12-31T23:59:60Z"]
    rows = [
        f"B{n},n,c,{price},{quantity},{at}"
        for n, (price, quantity, at) in enumerate(itertools.product(prices, quantities, times))
    ]
    return HEADER + "\n".join(rows) + "\n"


async def test_every_value_found_plain_in_python_is_one_postgres_stores_as_it_is(
    db: asyncpg.Connection,
) -> None:
    header = Header.parse(HEADER.strip().split(","))
    plain = [
        tuple(row[3:])
        for row in (line.split(",") for line in boundary_file().splitlines()[1:])
        if header.plain(header.pick(row))
    ]
    assert 0 < len(plain) < 600
    for price, quantity, at in plain:
        stored = await db.fetchval(
            "SELECT pg_input_is_valid($1, 'numeric(12,2)') AND $1::numeric(12,2) >= 0"
            " AND pg_input_is_valid($2, 'integer') AND $2::integer >= 0"
            " AND ($3 = '' OR pg_input_is_valid($3, 'timestamptz') AND $3::timestamptz < 'infinity')",
            price,
            quantity,
            at,
        )
        assert stored, (price, quantity, at)


async def test_rows_found_plain_in_python_load_exactly_as_the_checks_in_sql_would_load_them(
    api: Client, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plain rows skip the SQL checks of their values; every other row, and every row once a plain
    # one is refused, goes through them. Each way gives the same items and the same failed rows.
    outcomes = []
    for plain in (None, lambda _self, _values: False, lambda _self, _values: True):
        if plain is not None:
            monkeypatch.setattr(Header, "plain", plain)
        info = await import_csv_text(api, boundary_file())
        own_time = await db.fetchval("SELECT created_at FROM imports WHERE id = $1", info["id"])
        loaded = [(*row[:5], "own" if row[5] == own_time else row[5]) for row in await items(db)]
        outcomes.append((info["rows"], info["loaded"], loaded, await failures(db, info["id"])))
        await db.execute("TRUNCATE items")
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][0] == 600
    assert 0 < outcomes[0][1] < 600


async def test_200000_rows_load_with_their_failures(api: Client, db: asyncpg.Connection) -> None:
    lines = [HEADER]
    for n in range(200_000):
        if n % 10_000 == 7:
            lines.append(f"S{n},broken,cat,not-a-price,1,2024-01-01T00:00:00Z\n")
        else:
            lines.append(f"S{n},Item {n},cat{n % 7},{n % 1000}.{n % 100:02d},{n % 50},2024-01-01T00:00:00Z\n")
    info = await import_csv_text(api, "".join(lines).encode())
    assert (info["rows"], info["loaded"], info["failed"]) == (200_000, 199_980, 20)
    assert info["progress"]["fraction"] == 1.0
    assert await db.fetchval("SELECT count(*) FROM items") == 199_980
    row = await db.fetchrow("SELECT name, category, price, quantity FROM items WHERE sku = 'S123456'")
    assert row is not None
    assert tuple(row) == ("Item 123456", "cat4", Decimal("456.56"), 6)
    failed = await failures(db, info["id"])
    assert [f[0] for f in failed] == [n + 2 for n in range(200_000) if n % 10_000 == 7]
    page = (await api.get(f"/imports/{info['id']}/failed-rows", params={"limit": 15})).json()
    assert [r["line_no"] for r in page["items"]] == [f[0] for f in failed[:15]]
    rest = (
        await api.get(f"/imports/{info['id']}/failed-rows", params={"cursor": page["next_cursor"]})
    ).json()
    assert [r["line_no"] for r in rest["items"]] == [f[0] for f in failed[15:]]
    assert rest["next_cursor"] is None


async def test_multipart_upload_takes_the_file_field(api: Client, db: asyncpg.Connection) -> None:
    response = await api.post(
        "/imports",
        data={"note": "ignored"},
        files={"file": ("stock.csv", b"sku,name,price,quantity\nM1,Mug,4.5,2\n", "text/csv")},
    )
    assert response.status_code == 202, response.text
    info = await finished_import(api, response.json()["import_id"])
    assert (info["state"], info["filename"], info["loaded"]) == ("succeeded", "stock.csv", 1)
    assert [r[:2] for r in await items(db)] == [("M1", "Mug")]


async def test_multipart_without_a_file_is_a_400(api: Client, db: asyncpg.Connection) -> None:
    response = await api.post("/imports", files={"other": (None, b"sku,name,price,quantity\n")})
    assert_error(response, 400, "no file")
    await assert_nothing_stored(db)


async def test_wrong_content_type_is_a_415(api: Client, db: asyncpg.Connection) -> None:
    response = await api.post("/imports", json=[{"sku": "A"}])
    assert_error(response, 415, "text/csv")
    response = await api.post("/imports", content=b"x", headers={"content-type": "text/csv; charset=latin-1"})
    assert_error(response, 415, "UTF-8")
    await assert_nothing_stored(db)


async def test_upload_over_the_limit_is_a_413_and_leaves_nothing(
    dsn: str, registry: Any, db: asyncpg.Connection
) -> None:
    body = HEADER.encode() + b"L1,Long,cat,1,1,2024-01-01\n" * 200  # about 5 KB
    async with app_client(make_settings(dsn, import_max_bytes=2048), registry) as api:
        assert_error(await api.post("/imports", content=body, headers=CSV), 413, "2,048 bytes")
        assert (await api.post("/imports", content=body[:2000], headers=CSV)).status_code == 202
    assert await db.fetchval("SELECT count(*) FROM imports") == 1
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1


async def test_streamed_upload_is_refused_with_413_as_soon_as_it_passes_the_limit(
    dsn: str, registry: Any, db: asyncpg.Connection
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:  # chunked, no content-length
        nonlocal sent
        yield HEADER.encode()
        while sent < 50 * 1024 * 1024:
            sent += 64 * 1024
            yield b"S1,Stream,cat,1,1,2024-01-01\n" * 2260

    settings = make_settings(dsn, import_max_bytes=1024 * 1024)
    async with (
        live_server(settings, list(registry)) as base,
        aiohttp.ClientSession() as session,
        session.post(f"{base}/imports", data=endless(), headers=CSV) as response,
    ):
        assert response.status == 413
        assert "1,048,576 bytes" in (await response.json())["detail"]
    assert sent < 10 * 1024 * 1024  # stopped reading long before the end
    await assert_nothing_stored(db)


async def test_reads_404_and_400(api: Client) -> None:
    assert_error(await api.get("/imports/999"), 404, "no import with id 999")
    assert_error(await api.get("/imports/999/failed-rows"), 404, "no import with id 999")
    assert_error(await api.get("/imports/abc"), 400, "import_id")
    info = await import_csv_text(api, "sku,name,price,quantity\n")
    assert_error(await api.get(f"/imports/{info['id']}/failed-rows", params={"limit": 0}), 400, "limit")
    assert_error(await api.get(f"/imports/{info['id']}/failed-rows", params={"cursor": "x"}), 400, "cursor")
    empty = (await api.get(f"/imports/{info['id']}/failed-rows")).json()
    assert empty == {"items": [], "next_cursor": None}


async def test_upload_survives_a_restart_before_its_job_runs(
    dsn: str, registry: Any, db: asyncpg.Connection
) -> None:
    async with app_client(make_settings(dsn, worker=False), registry) as api:
        created = await upload(api, "sku,name,price,quantity\nR1,Rope,1,1\n")
        assert (await api.get(f"/imports/{created['import_id']}")).json()["state"] == "queued"
    async with app_client(make_settings(dsn), registry) as api:
        info = await finished_import(api, created["import_id"])
    assert (info["state"], info["loaded"]) == ("succeeded", 1)
    assert [r[0] for r in await items(db)] == ["R1"]


async def test_an_import_reads_as_final_only_once_its_job_is_with_the_jobs_last_progress(
    api_no_worker: Client, db: asyncpg.Connection
) -> None:
    """The import row records its outcome a moment before the job's outcome (which brings the last
    progress) is written; read in between, the import still shows the job's state."""
    created = await upload(api_no_worker, "sku,name,price,quantity\nR1,Rope,1,1\n")
    import_id, job_id = created["import_id"], created["job"]["id"]
    await db.execute("UPDATE imports SET state = 'succeeded', finished_at = now() WHERE id = $1", import_id)
    await db.execute(
        "UPDATE jobs SET state = 'running', progress = '{\"fraction\": 0.5}' WHERE id = $1", job_id
    )
    info = (await api_no_worker.get(f"/imports/{import_id}")).json()
    assert (info["state"], info["progress"]["fraction"]) == ("running", 0.5)
    await db.execute(
        "UPDATE jobs SET state = 'succeeded', progress = '{\"fraction\": 1.0}', finished_at = now()"
        " WHERE id = $1",
        job_id,
    )
    info = (await api_no_worker.get(f"/imports/{import_id}")).json()
    assert (info["state"], info["progress"]["fraction"]) == ("succeeded", 1.0)


class Killed(Exception):
    """Stands in for the process dying mid-import."""


def rerun_file() -> str:
    rows = [
        f"K{n % 40},name {n},cat,{n}.25,{n},2024-03-0{1 + n % 9}T00:00:00Z"
        if n % 9
        else f"K{n},bad,cat,{-n - 1},1,2024-01-01"
        for n in range(100)
    ]
    return HEADER + "\n".join(rows) + "\n"


async def test_import_killed_mid_way_and_run_again_ends_as_if_it_ran_once(
    dsn: str, api_no_worker: Client, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_module, "BATCH_ROWS", 7)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        run = task_runner(pool)
        # A clean run gives the reference state.
        first = await upload(api_no_worker, rerun_file())
        clean = await run(first["import_id"])
        reference = (await items(db), await failures(db, first["import_id"]))
        await db.execute("TRUNCATE items")

        second = await upload(api_no_worker, rerun_file())
        real_write = import_module._write_batch
        calls = 0

        async def dies_on_the_sixth_batch(*args: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 6:
                raise Killed
            await real_write(*args)

        monkeypatch.setattr(import_module, "_write_batch", dies_on_the_sixth_batch)
        with pytest.raises(Killed):
            await run(second["import_id"])
        partial = await db.fetchrow("SELECT state, rows FROM imports WHERE id = $1", second["import_id"])
        assert partial is not None
        assert (partial["state"], partial["rows"]) == ("running", 35)
        monkeypatch.setattr(import_module, "_write_batch", real_write)

        again = await run(second["import_id"])
        assert again == {**clean, "import_id": second["import_id"]}
        assert (await items(db), await failures(db, second["import_id"])) == reference
        counters = await db.fetchrow(
            "SELECT state, rows, loaded, failed FROM imports WHERE id = $1", second["import_id"]
        )
        assert counters is not None
        assert tuple(counters) == ("succeeded", clean["rows"], clean["loaded"], clean["failed"])
        # Run once more after success (the job's process died before the job was marked done).
        assert await run(second["import_id"]) == again
        assert (await items(db), await failures(db, second["import_id"])) == reference
    finally:
        await pool.close()


async def test_a_new_sku_another_import_inserts_meanwhile_is_upserted_not_a_failed_batch(
    dsn: str, api_no_worker: Client, db: asyncpg.Connection
) -> None:
    # The batch plainly inserts skus it does not find; one committed by someone else after the
    # probe makes that insert fail, and the batch runs again as an upsert: nothing fails.
    created = await upload(api_no_worker, "sku,name,price,quantity\nN1,mine,2,2\nN2,also mine,3,3\n")
    rival = await asyncpg.connect(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        rival_tx = rival.transaction()
        await rival_tx.start()
        await rival.execute(
            "INSERT INTO items (sku, name, price, quantity, updated_at) VALUES ('N1', 'theirs', 1, 1, now())"
        )
        running = asyncio.create_task(task_runner(pool)(created["import_id"]))

        async def insert_waits_on_the_rival() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%checked AS MATERIALIZED%')"
                )
            )

        await wait_until(insert_waits_on_the_rival, 10)
        await rival_tx.commit()
        result = await asyncio.wait_for(running, 10)
    finally:
        await rival.close()
        await pool.close()
    assert (result["rows"], result["loaded"], result["failed"]) == (2, 2, 0)
    assert [r[:4] for r in await items(db)] == [
        ("N1", "mine", None, Decimal("2.00")),
        ("N2", "also mine", None, Decimal("3.00")),
    ]


def task_runner(pool: asyncpg.Pool) -> Callable[[int], Any]:
    from skiplock.fetcher import Fetcher, FetchPolicy  # import_csv does not fetch: never started
    from skiplock.tasks import load_registry

    client = EngineClient(pool, load_registry())

    async def run(import_id: int) -> dict[str, int]:
        job = JobInfo(1, "import_csv", "default", 1, 3)
        ctx = Context(job, client=client, on_event=lambda *_: None, http=Fetcher(FetchPolicy()))
        result: dict[str, int] = await import_csv(ctx, ImportArgs(import_id=import_id))
        return result

    return run


def assert_error(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status
    for word in words:
        assert word in response.text, f"{word!r} not in {response.text}"


async def assert_nothing_stored(db: asyncpg.Connection) -> None:
    for table in ("imports", "import_chunks", "jobs"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_slow_uploads_take_a_bounded_share_of_the_pool(dsn: str, registry: Any) -> None:
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:  # a client that sends its header and then stalls
        yield HEADER.encode()
        await release.wait()
        yield b"A1,Apple,fruit,1.50,3,\n"

    app = create_app(make_settings(dsn, pool_max_size=4), tasks=list(registry))  # one upload at a time
    async with serve(app) as base, aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(session.post(f"{base}/imports", data=slow(), headers=CSV))
        await wait_until(lambda: app.state.upload_slots.locked(), 10)
        assert not first.done()
        async with session.post(f"{base}/imports", data=HEADER, headers=CSV) as refused:
            assert refused.status == 503
            assert "too many uploads in progress" in (await refused.json())["detail"]
        async with session.get(f"{base}/jobs") as reads:  # the rest of the API still has the pool
            assert reads.status == 200
        release.set()
        async with await first as accepted:
            assert accepted.status == 202
        async with session.post(f"{base}/imports", data=HEADER, headers=CSV) as later:
            assert later.status == 202


OLDEST_TRANSACTION = """
SELECT coalesce(extract(epoch FROM max(now() - xact_start)), 0)
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


async def test_a_stalled_upload_holds_no_transaction_open(
    dsn: str, registry: Any, db: asyncpg.Connection
) -> None:
    """While its client stalls, an upload keeps no snapshot: vacuum can clean up behind it."""
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield HEADER.encode() + b"A1,Apple,fruit,1.50,3,\n" * 1000
        await release.wait()
        yield b"A2,Pear,fruit,2.50,3,\n"

    app = create_app(make_settings(dsn, pool_max_size=4), tasks=list(registry))
    async with serve(app) as base, aiohttp.ClientSession() as session:
        upload = asyncio.ensure_future(session.post(f"{base}/imports", data=slow(), headers=CSV))
        await wait_until(lambda: app.state.upload_slots.locked(), 10)
        oldest = 0.0
        loop = asyncio.get_running_loop()
        watched_until = loop.time() + 3.0  # a window to observe, not a wait for a condition
        while loop.time() < watched_until:
            oldest = max(oldest, float(await db.fetchval(OLDEST_TRANSACTION)))
            await asyncio.sleep(0.1)
        print(f"oldest transaction while the upload stalled for 3 s: {oldest:.2f} s")
        assert oldest < 2.0
        release.set()
        async with await upload as accepted:
            assert accepted.status == 202
            created = await accepted.json()
    assert await db.fetchval("SELECT bytes FROM imports WHERE id = $1", created["import_id"]) > 20_000


async def test_an_upload_whose_client_stops_sending_is_cut_off_with_408(
    dsn: str, registry: Any, db: asyncpg.Connection
) -> None:
    release = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield HEADER.encode()
        await release.wait()
        yield b"A1,Apple,fruit,1.50,3,\n"

    app = create_app(make_settings(dsn, upload_body_timeout_s=1.0, pool_max_size=4), tasks=list(registry))
    async with serve(app) as base, aiohttp.ClientSession() as session:
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(15):
                async with session.post(f"{base}/imports", data=stalled(), headers=CSV) as response:
                    assert response.status == 408
                    assert "SKIPLOCK_UPLOAD_BODY_TIMEOUT_S" in (await response.json())["detail"]
        finally:
            release.set()
        elapsed = asyncio.get_running_loop().time() - started
        print(f"stalled upload answered after {elapsed:.2f} s")
        assert elapsed < 10
        assert not app.state.upload_slots.locked()  # its slot is free again
        async with session.post(f"{base}/imports", data=HEADER, headers=CSV) as later:
            assert later.status == 202
    assert await db.fetchval("SELECT count(*) FROM imports") == 1
