"""The Python half of an import: header, line numbers, raw text, column count and encoding."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiplock.tasks.import_csv.rows import (
    CsvFileError,
    Header,
    LineSplitter,
    RecordParser,
    StagedRow,
    clean_raw,
)


def parse(data: bytes, cuts: list[int] | None = None) -> tuple[RecordParser, list[StagedRow]]:
    """Parse ``data`` fed in pieces cut at ``cuts``, each piece parsed as it arrives."""
    splitter, parser, rows = LineSplitter(), RecordParser(), []
    start = 0
    for cut in [*(cuts or []), len(data)]:
        rows += parser.parse(splitter.feed(data[start:cut]), final=False)
        start = cut
    rows += parser.parse(splitter.finish(), final=True)
    parser.finish()
    return parser, rows


def test_header_is_trimmed_lower_cased_in_any_order_and_ignores_unknown_columns() -> None:
    header = Header.parse([" Price", "SKU ", "extra", "quantity", "name"])
    assert header.columns == ("sku", "name", "price", "quantity")
    assert header.width == 5
    assert header.pick(["1.5", "A", "x", "3", "Apple"]) == ("A", "Apple", "1.5", "3")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["sku", "name", "category"], "lacks required columns price, quantity"),
        (["name", "price", "quantity"], "lacks required column sku"),
        (["sku", "name", "price", "quantity", "SKU"], "names sku more than once"),
    ],
)
def test_bad_header_names_the_problem(fields: list[str], message: str) -> None:
    with pytest.raises(CsvFileError, match=message):
        Header.parse(fields)


def test_rows_carry_their_first_line_raw_text_and_known_columns() -> None:
    data = (
        b"\xef\xbb\xbfsku,name,price,quantity\r\n"
        b'A,"Apple, red",1.5,3\r\n\r\nB,"two\r\nlines",2,4\r\nC,x,1\r\n'
    )
    parser, rows = parse(data)
    assert parser.columns == ("line_no", "raw", "reason", "sku", "name", "price", "quantity", "plain")
    assert rows == [
        (2, 'A,"Apple, red",1.5,3\r\n', None, "A", "Apple, red", "1.5", "3", True),
        (4, 'B,"two\r\nlines",2,4\r\n', None, "B", "two\r\nlines", "2", "4", True),
        (6, "C,x,1\r\n", "expected 4 columns, got 3", None, None, None, None, False),
    ]


def test_bad_utf8_and_nul_fail_only_their_row() -> None:
    data = b"sku,name,price,quantity\nA,caf\xe9,1,1\nB,ok\x00,1,1\nC,caf\xc3\xa9,1,1\n"
    _, rows = parse(data)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (2, "A,caf\\xe9,1,1\n", "bad encoding: not UTF-8"),
        (3, "B,ok\\x00,1,1\n", "bad encoding: NUL character"),
        (4, "C,café,1,1\n", None),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file: no header row"),
        (b"\xef\xbb\xbf\r\n\n", "empty file: no header row"),
        (b"sku,name\n", "lacks required columns price, quantity"),
        (b"sku,n\xffame,price,quantity\n", "header row is not valid UTF-8"),
    ],
)
def test_file_without_a_usable_header_cannot_be_imported(data: bytes, message: str) -> None:
    with pytest.raises(CsvFileError, match=message):
        parse(data)


def test_header_only_file_has_no_rows() -> None:
    parser, rows = parse(b"sku,name,price,quantity")
    assert rows == []
    assert parser.header is not None


def test_stray_carriage_return_is_a_bad_row_and_parsing_goes_on() -> None:
    _, rows = parse(b"sku,name,price,quantity\nA,a\rb,1,1\nB,b,2,2\n")
    assert [r[0] for r in rows] == [2, 3]
    assert str(rows[0][2]).startswith("bad csv: new-line character seen in unquoted field")
    assert rows[1][2:] == (None, "B", "b", "2", "2", True)


def test_a_line_longer_than_the_limit_stops_the_import() -> None:
    with pytest.raises(CsvFileError, match="longer than"):
        parse(b"sku,name,price,quantity\n" + b"x" * (1 << 20) + b"y" * 10)


cell = st.text(alphabet=st.sampled_from('ab,"\n\r é'), max_size=6)
records = st.lists(st.tuples(cell, cell, cell, cell), max_size=25)


@settings(max_examples=200, deadline=None)
@given(records=records, data=st.data())
def test_any_chunking_gives_the_rows_csv_writer_wrote(
    records: list[tuple[str, str, str, str]], data: st.DataObject
) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["sku", "name", "price", "quantity"])
    lines = [2]
    for record in records:
        writer.writerow(record)
        lines.append(out.getvalue().count("\n") + 1)
    encoded = out.getvalue().encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=6)))
    _, rows = parse(encoded, cuts)
    # A record of one empty field is written as "" and read back as [''] (4 columns never collapse).
    assert [r[3:-1] for r in rows] == records
    assert [r[0] for r in rows] == lines[: len(records)]
    assert all(r[2] is None for r in rows)


@pytest.mark.parametrize(
    ("price", "quantity", "updated_at"),
    [
        ("0", "0", None),
        ("9999999999.99", "999999999", ""),
        ("12.5", "7", "2024-05-01T12:00:00Z"),
        ("1", "1", "2024-02-29 23:59:59.123456+05:30"),
        ("1", "1", "2024-05-01T12:00:00-15:59"),
    ],
)
def test_plain_values_are_those_postgres_takes_as_they_are(
    price: str, quantity: str, updated_at: str | None
) -> None:
    assert header_with(updated_at).plain(values(price, quantity, updated_at))


@pytest.mark.parametrize(
    ("price", "quantity", "updated_at"),
    [
        ("99999999999", "1", None),  # eleven digits: too large for numeric(12,2)
        ("1.005", "1", None),  # rounded
        ("-1", "1", None),
        (" 1", "1", None),
        ("1e3", "1", None),
        ("NaN", "1", None),
        ("1.", "1", None),
        ("1.5.5", "1", None),
        ("\uff11", "1", None),  # a digit, but not one PostgreSQL reads
        ("1", "\u0661", None),
        ("1", "2147483648", None),  # int4 ends here; 10 digits are never plain
        ("1", "+1", None),
        ("1", "1", "2024-02-30T00:00:00"),
        ("1", "1", "2024-05-01T24:00:00"),
        ("1", "1", "2024-05-01T12:00:00+16:00"),
        ("1", "1", "2024-05-01T12:00:00.1234567"),
        ("1", "1", "0000-01-01T00:00:00"),
        ("1", "1", "now"),
        ("1", "1", " 2024-05-01T12:00:00Z"),
        ("1", "1", "05/01/2024"),
    ],
)
def test_anything_else_is_left_to_the_checks_in_sql(
    price: str, quantity: str, updated_at: str | None
) -> None:
    assert not header_with(updated_at).plain(values(price, quantity, updated_at))


def header_with(updated_at: str | None) -> Header:
    return Header.parse(
        ["sku", "name", "price", "quantity", *(["updated_at"] if updated_at is not None else [])]
    )


def values(price: str, quantity: str, updated_at: str | None) -> tuple[str, ...]:
    return ("A", "a", price, quantity, *([updated_at] if updated_at is not None else []))


def test_clean_raw_keeps_valid_text() -> None:
    assert clean_raw("A,café,1,1") == "A,café,1,1"
