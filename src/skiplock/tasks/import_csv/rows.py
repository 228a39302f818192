"""The CSV side of an import, in pure Python: bytes to lines, lines to records, records to staged rows.

Only what SQL cannot see is decided here: the header, a record's column count and its encoding.
Values (empty sku, numbers, dates) are checked set-based in SQL once the rows are staged.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from skiplock.errors import CsvFileError as CsvFileError

#: The columns items are loaded from, in the staging table's order.
COLUMNS = ("sku", "name", "category", "price", "quantity", "updated_at")
REQUIRED = ("sku", "name", "price", "quantity")
#: Staging columns before the CSV's own: the record's first line, its raw text, a reason it failed.
META_COLUMNS = ("line_no", "raw", "reason")
#: The staging column after the CSV's own: whether its values are plain (see ``Header.plain``).
PLAIN_COLUMN = "plain"

#: A line longer than this is not a line of an items CSV: the import stops rather than hold it.
MAX_LINE_CHARS = 1 << 20

_BAD_BYTES = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8
# An ISO time PostgreSQL accepts whatever its settings (a year from 1, an offset it allows).
_PLAIN_TIME = re.compile(
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])?"
)

#: One row for the staging table: line_no, raw, reason, the header's known columns, then plain.
StagedRow = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Header:
    """The known columns found in the header row, and how to pick them out of a record."""

    columns: tuple[str, ...]  # a subset of COLUMNS, in COLUMNS order
    width: int  # the header's column count, which every record must have
    pick: Callable[[list[str]], tuple[str, ...]]
    checked: Callable[[tuple[str, ...]], tuple[str, ...]]  # picked values → price, quantity[, updated_at]

    @classmethod
    def parse(cls, fields: list[str]) -> Header:
        """Names are trimmed and lower-cased; unknown columns are ignored; a known one twice is an error."""
        names = [field.strip().lower() for field in fields]
        repeated = sorted({name for name in names if name in COLUMNS and names.count(name) > 1})
        if repeated:
            raise CsvFileError(f"header row names {', '.join(repeated)} more than once")
        missing = [name for name in REQUIRED if name not in names]
        if missing:
            raise CsvFileError(
                f"header row lacks required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"(found: {', '.join(names) or 'nothing'})"
            )
        columns = tuple(name for name in COLUMNS if name in names)
        getter = itemgetter(*(names.index(name) for name in columns))  # 4+ columns: always a tuple
        checked = itemgetter(*(columns.index(name) for name in COLUMNS[3:] if name in columns))
        return cls(columns=columns, width=len(names), pick=getter, checked=checked)

    def plain(self, values: tuple[str, ...]) -> bool:
        """Whether PostgreSQL is sure to take this record's price, quantity and updated_at as
        they are: a plain row skips their checks in SQL, 0.9 us of the batch statement's 4.2 a row,
        for 0.45 us here, spent while PostgreSQL loads the batch before. Anything else is checked
        there, so this need be strict, not complete."""
        checked = self.checked(values)
        price, quantity = checked[0], checked[1]
        whole, point, cents = price.partition(".")
        # No sign, space, exponent or rounding (numeric(12,2) holds ten digits before the point), an int4.
        if not (
            price.isascii()
            and whole.isdigit()
            and len(whole) <= 10
            and (not point or (cents.isdigit() and len(cents) <= 2))
            and quantity.isascii()
            and quantity.isdigit()
            and len(quantity) <= 9
        ):
            return False
        at = checked[2] if len(checked) == 3 else ""
        if not at:  # no column, or empty: the import's own time
            return True
        if not _PLAIN_TIME.fullmatch(at):
            return False
        if at[8:10] > "28":  # the calendar: no 30 February
            try:
                datetime.fromisoformat(at)
            except ValueError:
                return False
        return True


class LineSplitter:
    """UTF-8 bytes in any chunking → complete lines, each with its ``\\n`` (CRLF is left to csv).

    Bytes that are not UTF-8 survive as lone surrogates (``surrogateescape``) so that one bad line
    fails alone instead of the whole file; a leading BOM is dropped.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._tail = ""
        self._started = False

    def feed(self, data: bytes | memoryview) -> list[str]:
        return self._split(self._decoder.decode(data), final=False)

    def finish(self) -> list[str]:
        """The last lines, the final one possibly without a newline."""
        return self._split(self._decoder.decode(b"", final=True), final=True)

    def _split(self, text: str, *, final: bool) -> list[str]:
        if not self._started and (text or final):
            self._started = True
            text = text.removeprefix("\ufeff")
        text = self._tail + text if self._tail else text
        end = len(text) if final else text.rfind("\n") + 1
        self._tail = text[end:]
        if len(self._tail) > MAX_LINE_CHARS:
            raise CsvFileError(f"a line is longer than {MAX_LINE_CHARS:,} characters: is this a CSV file?")
        # StringIO with newline="\n" splits on \n alone; str.splitlines would also split on \r, \x0c …
        return io.StringIO(text[:end], newline="\n").readlines() if end else []


def clean_raw(raw: str) -> str:
    """A raw record as text PostgreSQL can store: bad bytes as ``\\xNN``, NUL as ``\\x00``."""
    if _BAD_BYTES.search(raw):
        raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return raw.replace("\x00", "\\x00")


class RecordParser:
    """Lines → staged rows, remembering the header and where each record starts.

    A record may span lines (a quoted newline) and so span two calls: lines of a record that is not
    complete at the end of a call are kept and parsed again with the next call's lines.
    """

    def __init__(self) -> None:
        self.header: Header | None = None
        self._carry: list[str] = []
        self._first_line = 1  # the file line number of the first line in _carry (or of the next call)

    @property
    def columns(self) -> tuple[str, ...]:
        assert self.header is not None
        return (*META_COLUMNS, *self.header.columns, PLAIN_COLUMN)

    def parse(self, lines: list[str], *, final: bool) -> list[StagedRow]:
        """Staged rows of the complete records among ``lines`` (all of them when ``final``)."""
        if self._carry:
            lines = self._carry + lines
            self._carry = []
        if not lines:
            return []
        count = len(lines)
        # A blank line after the last one: if csv reads it as its own (empty) record, every record
        # before it was complete; if a quoted field swallows it, the last record needs more lines.
        reader = csv.reader(lines if final else [*lines, "\n"])
        staged: list[StagedRow] = []
        done = 0  # lines consumed by the records handled so far
        while True:
            try:
                for record in reader:
                    end = reader.line_num
                    if end > count:  # the blank sentinel, or a record it was swallowed by
                        self._carry = lines[done:]
                        break
                    self._record(record, lines, done, end, staged)
                    done = end
                break
            except csv.Error as exc:
                end = min(reader.line_num, count)
                if reader.line_num > count and not final:
                    self._carry = lines[done:]
                    break
                self._fail(lines, done, end, f"bad csv: {exc}", staged)
                done = end
        self._first_line += done
        return staged

    def _record(
        self, record: list[str], lines: list[str], start: int, end: int, out: list[StagedRow]
    ) -> None:
        if not record:
            return  # a blank line: not a row
        raw = lines[start] if end - start == 1 else "".join(lines[start:end])
        header = self.header
        if header is None:
            if not raw.isascii() and _BAD_BYTES.search(raw):
                raise CsvFileError("header row is not valid UTF-8")
            self.header = Header.parse(record)
            return
        if not raw.isascii() and _BAD_BYTES.search(raw):
            self._fail(lines, start, end, "bad encoding: not UTF-8", out)
        elif "\x00" in raw:
            self._fail(lines, start, end, "bad encoding: NUL character", out)
        elif len(record) != header.width:
            self._fail(lines, start, end, f"expected {header.width} columns, got {len(record)}", out)
        else:
            values = header.pick(record)
            out.append((self._first_line + start, raw, None, *values, header.plain(values)))

    def _fail(self, lines: list[str], start: int, end: int, reason: str, out: list[StagedRow]) -> None:
        if self.header is None:
            raise CsvFileError(f"header row is not valid CSV: {reason}")
        raw = clean_raw("".join(lines[start:end]))
        out.append((self._first_line + start, raw, reason, *([None] * len(self.header.columns)), False))

    def finish(self) -> None:
        """Raise CsvFileError if the whole file held no header row."""
        if self.header is None:
            raise CsvFileError("empty file: no header row")
