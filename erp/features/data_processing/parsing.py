"""Reading a sales-order CSV: decoding, records, the header and rows. Pure logic, no I/O.

Each step feeds the next, and the line numbers and outcomes they carry agree from the bytes to
the orders; the last step, grouping rows into orders, is erp.features.data_processing.orders.

The file arrives in chunks of bytes (an upload streaming in, or chunks read back from the file
store) and is never whole in memory:

- `Utf8Decoder` decodes chunk by chunk (`codecs.getincrementaldecoder("utf-8-sig")`: UTF-8,
  with or without a byte-order mark) and names the line of the first byte that is not UTF-8.
- `LineLengths` (the upload check) names the first line longer than MAX_LINE_CHARACTERS.
- `CsvRecords` turns decoded text into CSV records with one stdlib `csv` reader for the whole
  file, which keeps its state from piece to piece, so a record may span chunks (and lines)
  and each piece costs time in proportion to its length; a record is bounded (characters,
  lines, fields). Lines without a quote, one record each, are read without it (faster).

Lines end with LF, CR LF or CR alone, for line numbers as for records.
- `header_columns` checks the header; `parse_row` checks one row.
- `OrderAssembler` (erp.features.data_processing.orders) groups consecutive rows with the same `order_number` into one order: an
  order is imported whole or not at all, so one bad row rejects the rows of its order.

File format: a header naming the columns in `COLUMNS` (any order), then one row per order
line; the rows of an order are next to each other and agree on date, customer and currency.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import operator
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import greenlet

COLUMNS = ("order_number", "order_date", "customer", "currency", "product", "quantity", "unit_price")
EXAMPLE_HEADER = ",".join(COLUMNS)
MAX_QUANTITY = 1_000_000

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_CURRENCY = re.compile(r"[A-Z]{3}\Z")
_PRICE = re.compile(r"\d{1,12}(?:\.\d{1,2})?\Z")
_QUANTITY = re.compile(r"[1-9]\d{0,6}\Z")
_TEXT_LIMITS = {"order_number": 64, "customer": 200, "product": 200}


class EncodingProblem(ValueError):
    """The bytes are not UTF-8; the message names the line."""


class HeaderProblem(ValueError):
    """The header does not name the expected columns; the message says what is wrong."""


class RowProblem(ValueError):
    """One row is invalid; the message names the column and the problem."""


class Utf8Decoder:
    """Incremental UTF-8 (optional BOM) decoding that knows which line a bad byte is on.

    Lines end with LF, CR LF or CR alone, as they do for the CSV records (`CsvRecords`).
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._lines_before = 0
        self._ended_with_cr = False  # a CR LF cut by the chunk boundary is one line end

    def _line_ends(self, data: bytes) -> int:
        ends = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
        return ends - 1 if self._ended_with_cr and data.startswith(b"\n") else ends

    def decode(self, chunk: bytes, final: bool = False) -> str:
        held = len(self._decoder.getstate()[0])  # bytes of a character cut by the last chunk
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as error:
            before = chunk[: max(0, error.start - held)]
            line = self._lines_before + self._line_ends(before) + 1
            raise EncodingProblem(
                f"line {line} is not valid UTF-8 (byte 0x{error.object[error.start]:02x}): "
                "save the file as UTF-8 (with or without BOM)"
            ) from None
        if chunk:
            self._lines_before += self._line_ends(chunk)
            self._ended_with_cr = chunk.endswith(b"\r")
        return text


def complete_lines(text: str) -> tuple[list[str], str]:
    """`text` as its complete lines (each with its line end: LF, CR LF or CR alone) and the
    rest, which may go on in the next piece (a CR at the very end may be the start of CR LF)."""
    lines = io.StringIO(text, newline="").readlines()
    rest = lines.pop() if lines and not lines[-1].endswith("\n") else ""
    return lines, rest


# Bounds of one CSV record, far above any valid row (7 fields; its texts at most 464
# characters, line breaks included): a record past one of them is a row error at once,
# and reading goes on at the next line, so a record that never ends costs no more than this.
MAX_RECORD_CHARACTERS = 64 * 1024
MAX_RECORD_LINES = 1000
MAX_RECORD_FIELDS = 100
# The upload check refuses a file with a line longer than this (422 naming the line).
MAX_LINE_CHARACTERS = MAX_RECORD_CHARACTERS


class LineTooLong(ValueError):
    """A line of the file is longer than MAX_LINE_CHARACTERS; the message names it."""


class LineLengths:
    """Checks, piece by piece, that no line of a text is longer than `limit` characters."""

    def __init__(self, limit: int = MAX_LINE_CHARACTERS) -> None:
        self._limit = limit
        self._lines_before = 0  # complete lines before the current one
        self._current = 0  # characters of the current line so far
        self._cr = False  # the last piece ended with CR: a LF first in this one ends nothing more

    def feed(self, text: str) -> None:
        if not text:
            return
        if self._cr and text[0] == "\n":
            text = text[1:]
        self._cr = text.endswith("\r")
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if self._current + len(lines[0]) > self._limit or max(map(len, lines)) > self._limit:
            lengths = [len(line) for line in lines]
            lengths[0] += self._current
            index = next(i for i, length in enumerate(lengths) if length > self._limit)
            raise LineTooLong(f"line {self._lines_before + index + 1} is longer than {self._limit:,} characters")
        if len(lines) == 1:
            self._current += len(lines[0])
        else:
            self._lines_before += len(lines) - 1
            self._current = len(lines[-1])


# Not frozen, as SalesRow (see there): one is made per record.
@dataclass(slots=True)
class Record:
    first_line: int  # physical line numbers in the file; line 1 is the header
    last_line: int
    fields: list[str] | None  # None when the csv module could not read it
    problem: str | None = None


class _RecordTooLarge(Exception):
    """Raised by `_LineFeed` into the csv reader: the record it reads is past a bound."""


class _LineFeed:
    """The csv reader's input: the lines received so far, one at a time, counted.

    When none is left before the end of the file, it switches back to the greenlet that fed
    the last piece, and goes on when the next piece comes: the reader waits inside its
    record, its state kept, instead of failing at the end of its input and being read again.
    """

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.finished = False
        self.feeder: greenlet.greenlet | None = None
        self.lines_read = 0  # lines handed to the reader
        self.record_start = 1  # the first line of the record being read
        self.record_characters = 0
        self.too_large: str | None = None  # why the record being read was cut

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        while not self.lines:
            if self.finished or self.feeder is None:
                raise StopIteration
            self.feeder.switch()
        line = self.lines.popleft()
        self.lines_read += 1
        self.record_characters += len(line)
        if self.record_characters > MAX_RECORD_CHARACTERS:
            self.too_large = f"the record is longer than {MAX_RECORD_CHARACTERS:,} characters"
        elif self.lines_read - self.record_start >= MAX_RECORD_LINES:
            self.too_large = f"the record spans more than {MAX_RECORD_LINES:,} lines"
        if self.too_large is not None:
            raise _RecordTooLarge
        return line


def _read_records(feed: _LineFeed, out: list[Record]) -> None:
    """The parser greenlet: one csv reader over the whole file, records appended to `out`."""
    # strict: a quoted field left open at the end of the file, or text after a closing
    # quote, is a row error rather than a silently different value.
    reader = csv.reader(feed, strict=True)
    while True:
        fields: list[str] | None
        try:
            fields = next(reader)
            problem = None
        except StopIteration:
            return
        except _RecordTooLarge:
            fields, problem, feed.too_large = None, feed.too_large, None
        except csv.Error as error:
            fields, problem = None, f"not readable as CSV: {error}"
        if fields is not None and len(fields) > MAX_RECORD_FIELDS:
            fields, problem = None, f"the record has more than {MAX_RECORD_FIELDS} fields"
        if fields or problem is not None:  # [] is a blank line
            out.append(Record(feed.record_start, feed.lines_read, fields, problem))
        feed.record_start = feed.lines_read + 1
        feed.record_characters = 0


def _plain_records(lines: list[str], lines_before: int) -> list[Record] | None:
    """The records of complete lines holding no quote and no NUL, read where the reader is
    between records, or None if a line is too long for a record (the reader says why).

    Without a quote each line is one record (a field cannot span lines), and such a line gives
    the csv module nothing to refuse: the same records as the reader in its greenlet would
    give, read by a csv reader over the lines themselves, without a switch or a call of
    `_LineFeed` per line. Files without quoted fields (most exports) are read this way.
    """
    if max(map(len, lines)) > MAX_RECORD_CHARACTERS:
        return None
    found = []
    for line, fields in enumerate(csv.reader(lines, strict=True), start=lines_before + 1):
        if len(fields) > MAX_RECORD_FIELDS:
            found.append(Record(line, line, None, f"the record has more than {MAX_RECORD_FIELDS} fields"))
        elif fields:  # [] is a blank line
            found.append(Record(line, line, fields))
    return found


class CsvRecords:
    """CSV records from text fed piece by piece: `feed(text)`, then `finish()` at the end.

    Both return the records complete so far. A blank line is no record (it is skipped). Lines
    end with LF, CR LF or CR alone.

    One `csv.reader` reads the whole file, in a greenlet of its own: its input (`_LineFeed`)
    hands it the lines received so far and, when they run out inside a record, switches back
    here until the next piece. So a record spanning pieces is read once, and each piece costs
    time in proportion to its length. Why a greenlet: the reader is C code that pulls its
    lines, and a pull cannot wait for a piece that has not come; a reader failing at the end
    of each piece and reading a pending record again from its start made a record that never
    ends (quoted fields each holding a line break) cost time in the square of its length.
    A record past MAX_RECORD_CHARACTERS, MAX_RECORD_LINES or MAX_RECORD_FIELDS is a problem
    record at once; reading goes on at the next line.

    Lines holding no quote, read while that reader is between records, skip it: each is one
    record, read by a csv reader over the lines themselves (`_plain_records`), the same records
    at a fraction of the cost of a switch and a `_LineFeed` call per line.
    """

    def __init__(self) -> None:
        self._feed = _LineFeed()
        self._found: list[Record] = []
        self._rest = ""  # text after the last complete line
        self._skipping = False  # dropping the rest of a line already too long for any record
        self._lf_may_follow = False
        self._parser = greenlet.greenlet(functools.partial(_read_records, self._feed, self._found))

    def feed(self, text: str) -> list[Record]:
        if not text:
            return []
        if self._lf_may_follow:
            self._lf_may_follow = False
            text = text[1:] if text.startswith("\n") else text
        if self._skipping:
            text = self._skip_line(text)
        text = self._rest + text if self._rest else text
        lines, self._rest = complete_lines(text)
        if len(self._rest) > MAX_RECORD_CHARACTERS:
            # Its record is too large already (the reader says so, counting it as one line):
            # the line's rest, still to come, is dropped, not held.
            lines.append(self._rest)
            self._rest = ""
            self._skipping = True
        if not lines:
            return []
        if '"' not in text and "\x00" not in text and self._between_records():
            plain = _plain_records(lines, self._feed.lines_read)
            if plain is not None:
                self._feed.lines_read += len(lines)
                self._feed.record_start = self._feed.lines_read + 1
                return plain
        self._feed.lines.extend(lines)
        return self._run()

    def _between_records(self) -> bool:
        """The reader has read every line it was given, and they ended a record."""
        feed = self._feed
        return not feed.lines and feed.record_start == feed.lines_read + 1 and not self._parser.dead

    def _skip_line(self, text: str) -> str:
        """What follows the end of the line being dropped ("" while it goes on)."""
        end = min((i for i in (text.find("\n"), text.find("\r")) if i >= 0), default=-1)
        if end < 0:
            return ""
        self._skipping = False
        # A CR last in the piece may be the first half of a CR LF the piece boundary cut.
        self._lf_may_follow = end == len(text) - 1 and text[end] == "\r"
        return text[end + 2 :] if text.startswith("\r\n", end) else text[end + 1 :]

    def finish(self) -> list[Record]:
        if self._rest:
            self._feed.lines.append(self._rest)
            self._rest = ""
        self._feed.finished = True
        return self._run()

    def _run(self) -> list[Record]:
        if not self._parser.dead:
            self._feed.feeder = greenlet.getcurrent()
            self._parser.parent = self._feed.feeder
            self._parser.switch()
        found = self._found[:]
        self._found.clear()
        return found


def header_columns(fields: list[str]) -> tuple[int, ...]:
    """The position of each of `COLUMNS` in the header, or HeaderProblem saying what is wrong."""
    names = [name.strip().lower() for name in fields]
    missing = [name for name in COLUMNS if name not in names]
    unknown = [name for name in names if name not in COLUMNS]
    repeated = sorted({name for name in names if names.count(name) > 1})
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown {', '.join(repr(name) for name in unknown)}")
    if repeated:
        problems.append(f"repeated {', '.join(repeated)}")
    if problems:
        raise HeaderProblem(f"the header must name the columns {EXAMPLE_HEADER} (any order): {'; '.join(problems)}")
    return tuple(names.index(name) for name in COLUMNS)


# Rows and orders are plain (not frozen) slotted dataclasses: a frozen one sets each field
# through object.__setattr__, several times slower to make, and an import makes one per row.
@dataclass(slots=True)
class SalesRow:
    line: int
    order_number: str
    order_date: str  # YYYY-MM-DD, a date in the calendar (PostgreSQL reads it as it is)
    customer: str
    currency: str
    product: str
    quantity: int
    unit_price: str  # ASCII digits, at most two decimals (PostgreSQL reads it as a numeric)
    unit_price_cents: int  # the same amount in cents: totals are added up exactly as integers


# Control characters a text field may not hold: PostgreSQL cannot store U+0000, and an XLSX
# cell (a sales report) cannot hold any of these; tab, line feed and carriage return are text.
_CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f"
_CONTROL_CHARACTER = re.compile(f"[{_CONTROL_CHARACTERS}]")


def _text(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise RowProblem(f"{name} is empty")
    if len(value) > _TEXT_LIMITS[name]:
        raise RowProblem(f"{name} is longer than {_TEXT_LIMITS[name]} characters")
    if control := _CONTROL_CHARACTER.search(value):
        raise RowProblem(
            f"{name} holds the control character U+{ord(control.group()):04X} at position {control.start() + 1}"
        )
    return value


ColumnPicker = Callable[[list[str]], tuple[str, ...]]


def column_picker(columns: tuple[int, ...]) -> ColumnPicker:
    """The fields of a row in the order of COLUMNS (from `header_columns`), in one C call."""
    return operator.itemgetter(*columns)


# The four formatted fields of a good row, stripped and joined by spaces, then its three text
# fields, each between NULs, match this at once (none of the four patterns matches a space, and
# no text field may hold a NUL, so each field matches its own pattern: the text's length bounds
# and the absence of control characters included); a row that does not is checked field by
# field, for the message.
_FORMATTED = re.compile(
    "(?:{}) (?:{}) (?:{}) (?:{}) ".format(
        *(pattern.pattern.removesuffix(r"\Z") for pattern in (_DATE, _CURRENCY, _QUANTITY, _PRICE))
    )
    + r"\x00".join(
        f"[^{_CONTROL_CHARACTERS}]{{1,{_TEXT_LIMITS[name]}}}" for name in ("order_number", "customer", "product")
    )
    + r"\Z"
)
_FIELD_COUNT = len(COLUMNS)


def parse_row(fields: list[str], pick: ColumnPicker, line: int) -> SalesRow:
    """One CSV row as a SalesRow, or RowProblem naming the first column that is wrong."""
    if len(fields) != _FIELD_COUNT:
        raise RowProblem(f"expected {len(COLUMNS)} fields, found {len(fields)}")
    number, day, customer, currency, product, quantity, price = map(str.strip, pick(fields))
    if not _FORMATTED.match(f"{day} {currency} {quantity} {price} {number}\x00{customer}\x00{product}"):
        _explain(number, day, customer, currency, product, quantity, price)
    try:
        date.fromisoformat(day)  # inline, not _calendar_date: a call per row costs
    except ValueError:
        _calendar_date(day)
    whole, _, cents = price.partition(".")
    unit_price_cents = int(whole) * 100 + (int(cents) * (10 if len(cents) == 1 else 1) if cents else 0)
    if not price.isascii():  # other digits Python reads (Arabic-Indic, ...) but PostgreSQL does not
        price = decimal_text(unit_price_cents)
    return SalesRow(line, number, day, customer, currency, product, int(quantity), price, unit_price_cents)


def _explain(number: str, day: str, customer: str, currency: str, product: str, quantity: str, price: str) -> None:
    """RowProblem for the first field that is wrong, in the order the checks have always run."""
    _text("order_number", number)
    if not _DATE.match(day):
        raise RowProblem(f"order_date {day!r} is not a date written YYYY-MM-DD")
    _calendar_date(day)
    if not _CURRENCY.match(currency):
        raise RowProblem(f"currency {currency!r} is not a three-letter ISO 4217 code such as EUR")
    if not _QUANTITY.match(quantity):
        raise RowProblem(f"quantity {quantity!r} is not a whole number from 1 to {MAX_QUANTITY:,}")
    if not _PRICE.match(price):
        raise RowProblem(f"unit_price {price!r} is not an amount such as 12.50 (at most 2 decimals, not negative)")
    _text("customer", customer)
    _text("product", product)
    raise AssertionError("_explain found nothing wrong with a row the fast check refused")


def _calendar_date(day: str) -> None:
    try:
        date.fromisoformat(day)
    except ValueError:
        raise RowProblem(f"order_date {day!r} is not a date in the calendar") from None


def decimal_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def order_number_of(fields: list[str] | None, columns: tuple[int, ...]) -> str | None:
    """The order a row that failed belongs to, if it says so."""
    if fields is None or len(fields) != len(COLUMNS):
        return None
    return fields[columns[0]].strip() or None
