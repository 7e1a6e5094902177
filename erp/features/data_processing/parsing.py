"""Reading a sales-order CSV: decoding, records, the header, rows and orders. Pure logic, no I/O.

The file arrives in chunks of bytes (an upload streaming in, or chunks read back from the file
store) and is never whole in memory:

- `Utf8Decoder` decodes chunk by chunk (`codecs.getincrementaldecoder("utf-8-sig")`: UTF-8,
  with or without a byte-order mark) and names the line of the first byte that is not UTF-8.
- `CsvRecords` turns decoded text into CSV records with the stdlib `csv` module, handing it
  only complete lines; a record whose quoted field goes on past the text received so far is
  parsed again when more text has come, so a record may span chunks (and lines).
- `header_columns` checks the header; `parse_row` checks one row.
- `OrderAssembler` groups consecutive rows with the same `order_number` into one order: an
  order is imported whole or not at all, so one bad row rejects the rows of its order.

File format: a header naming the columns in `COLUMNS` (any order), then one row per order
line; the rows of an order are next to each other and agree on date, customer and currency.
"""

from __future__ import annotations

import codecs
import csv
import operator
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

COLUMNS = ("order_number", "order_date", "customer", "currency", "product", "quantity", "unit_price")
EXAMPLE_HEADER = ",".join(COLUMNS)
# An order with more lines than this is refused (it would be held in memory whole).
MAX_ORDER_LINES = 1000
MAX_QUANTITY = 1_000_000
# sales_orders.amount is NUMERIC(14, 2).
MAX_ORDER_AMOUNT = Decimal("999999999999.99")

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
    """Incremental UTF-8 (optional BOM) decoding that knows which line a bad byte is on."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._newlines_before = 0

    def decode(self, chunk: bytes, final: bool = False) -> str:
        held = len(self._decoder.getstate()[0])  # bytes of a character cut by the last chunk
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as error:
            before = chunk[: max(0, error.start - held)]
            line = self._newlines_before + before.count(b"\n") + 1
            raise EncodingProblem(
                f"line {line} is not valid UTF-8 (byte 0x{error.object[error.start]:02x}): "
                "save the file as UTF-8 (with or without BOM)"
            ) from None
        self._newlines_before += chunk.count(b"\n")
        return text


class _NeedMoreText(Exception):
    """The csv reader asked for a line that has not arrived yet."""


class _LineFeed:
    """The csv reader's input: complete lines, remembering those taken for the current record."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.taken: list[str] = []
        self.at_end = False

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if not self.lines:
            if self.at_end:
                raise StopIteration
            raise _NeedMoreText
        line = self.lines.popleft()
        self.taken.append(line)
        return line


@dataclass(frozen=True, slots=True)
class Record:
    first_line: int  # physical line numbers in the file; line 1 is the header
    last_line: int
    fields: list[str] | None  # None when the csv module could not read it
    problem: str | None = None


class CsvRecords:
    """CSV records from text fed piece by piece: `feed(text)`, then `finish()` at the end.

    Both return the records complete so far. A blank line is no record (it is skipped).
    """

    def __init__(self) -> None:
        self._feed = _LineFeed()
        # strict: a quoted field left open at the end of the file, or text after a closing
        # quote, is a row error rather than a silently different value.
        self._reader = csv.reader(self._feed, strict=True)
        self._partial = ""  # text after the last newline
        self._lines_done = 0

    def feed(self, text: str) -> list[Record]:
        if not text:
            return []
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        self._feed.lines.extend(part + "\n" for part in parts)
        return self._records()

    def finish(self) -> list[Record]:
        if self._partial:
            self._feed.lines.append(self._partial)
            self._partial = ""
        self._feed.at_end = True
        return self._records()

    def _records(self) -> list[Record]:
        records: list[Record] = []
        feed = self._feed
        while feed.lines:
            feed.taken.clear()
            first_line = self._lines_done + 1
            try:
                fields: list[str] | None = next(self._reader)
                problem = None
            except _NeedMoreText:
                # A quoted field goes on in text not received yet: read this record again later.
                feed.lines.extendleft(reversed(feed.taken))
                break
            except StopIteration:
                break
            except csv.Error as error:
                fields, problem = None, f"not readable as CSV: {error}"
            self._lines_done += len(feed.taken)
            if fields == [] and problem is None:
                continue  # a blank line
            records.append(Record(first_line, self._lines_done, fields, problem))
        return records


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


@dataclass(frozen=True, slots=True)
class SalesRow:
    line: int
    order_number: str
    order_date: date
    customer: str
    currency: str
    product: str
    quantity: int
    unit_price: Decimal


def _text(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise RowProblem(f"{name} is empty")
    if len(value) > _TEXT_LIMITS[name]:
        raise RowProblem(f"{name} is longer than {_TEXT_LIMITS[name]} characters")
    return value


ColumnPicker = Callable[[list[str]], tuple[str, ...]]


def column_picker(columns: tuple[int, ...]) -> ColumnPicker:
    """The fields of a row in the order of COLUMNS (from `header_columns`), in one C call."""
    return operator.itemgetter(*columns)


def parse_row(fields: list[str], pick: ColumnPicker, line: int) -> SalesRow:
    """One CSV row as a SalesRow, or RowProblem naming the first column that is wrong."""
    if len(fields) != len(COLUMNS):
        raise RowProblem(f"expected {len(COLUMNS)} fields, found {len(fields)}")
    number, day, customer, currency, product, quantity, price = pick(fields)
    order_number = _text("order_number", number)
    day = day.strip()
    if not _DATE.match(day):
        raise RowProblem(f"order_date {day!r} is not a date written YYYY-MM-DD")
    try:
        order_date = date.fromisoformat(day)
    except ValueError:
        raise RowProblem(f"order_date {day!r} is not a date in the calendar") from None
    currency = currency.strip()
    if not _CURRENCY.match(currency):
        raise RowProblem(f"currency {currency!r} is not a three-letter ISO 4217 code such as EUR")
    quantity = quantity.strip()
    if not _QUANTITY.match(quantity):
        raise RowProblem(f"quantity {quantity!r} is not a whole number from 1 to {MAX_QUANTITY:,}")
    price = price.strip()
    if not _PRICE.match(price):
        raise RowProblem(f"unit_price {price!r} is not an amount such as 12.50 (at most 2 decimals, not negative)")
    return SalesRow(
        line=line,
        order_number=order_number,
        order_date=order_date,
        customer=_text("customer", customer),
        currency=currency,
        product=_text("product", product),
        quantity=int(quantity),
        unit_price=Decimal(price),
    )


def order_number_of(fields: list[str] | None, columns: tuple[int, ...]) -> str | None:
    """The order a row that failed belongs to, if it says so."""
    if fields is None or len(fields) != len(COLUMNS):
        return None
    return fields[columns[0]].strip() or None


@dataclass(frozen=True, slots=True)
class OrderLine:
    position: int
    product: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class Order:
    order_number: str
    order_date: date
    customer: str
    currency: str
    amount: Decimal
    lines: list[OrderLine]
    row_lines: list[int]  # the file line of each of its rows


@dataclass(frozen=True, slots=True)
class RowFailure:
    line: int
    reason: str


@dataclass
class _PendingOrder:
    order_number: str
    rows: list[SalesRow] = field(default_factory=list)
    problems: list[RowFailure] = field(default_factory=list)
    # Failed rows belonging to no order, read while this order was open: reported after it.
    held: list[RowFailure] = field(default_factory=list)

    def row_lines(self) -> list[int]:
        return sorted([row.line for row in self.rows] + [problem.line for problem in self.problems])


@dataclass
class Batch:
    """Outcomes of every record up to `through_line` (and of none after it)."""

    orders: list[Order] = field(default_factory=list)
    failures: list[RowFailure] = field(default_factory=list)
    through_line: int = 0
    rows: int = 0  # data rows these outcomes account for


def _close(pending: _PendingOrder) -> tuple[Order | None, list[RowFailure]]:
    """An order from its rows, or the failures of all of them (an order is imported whole)."""
    rows = pending.rows
    problems = list(pending.problems)
    if len(rows) > 1 and not problems:
        first = rows[0]
        for row in rows[1:]:
            for name in ("order_date", "customer", "currency"):
                if getattr(row, name) != getattr(first, name):
                    problems.append(
                        RowFailure(
                            row.line, f"{name} differs from line {first.line} of the same order {first.order_number!r}"
                        )
                    )
                    break
        if len(rows) > MAX_ORDER_LINES:
            problems.append(RowFailure(rows[MAX_ORDER_LINES].line, f"the order has more than {MAX_ORDER_LINES} lines"))
    if not problems:
        amount = sum((row.quantity * row.unit_price for row in rows), Decimal(0))
        if amount > MAX_ORDER_AMOUNT:
            problems.append(RowFailure(rows[0].line, f"the order's total {amount} exceeds {MAX_ORDER_AMOUNT}"))
    if not problems:
        first = rows[0]
        lines = [OrderLine(i, row.product, row.quantity, row.unit_price) for i, row in enumerate(rows, start=1)]
        order = Order(
            first.order_number, first.order_date, first.customer, first.currency, amount, lines, [r.line for r in rows]
        )
        return order, sorted(pending.held, key=lambda failure: failure.line)
    failed_lines = {problem.line for problem in problems}
    first_bad = min(failed_lines)
    failures = problems + [
        RowFailure(row.line, f"order {pending.order_number!r} not imported: its row at line {first_bad} is invalid")
        for row in rows
        if row.line not in failed_lines
    ]
    return None, sorted(failures + pending.held, key=lambda failure: failure.line)


class OrderAssembler:
    """Groups records into orders; outcomes come out in batches covering whole lines.

    `add(record)` returns a Batch when an order closed (the record opened the next one) or a
    stray bad row was read while no order was open; `finish()` returns the rest. A batch
    covers every line up to `through_line`, so work committed batch by batch can resume
    after the last committed batch's `through_line` without losing or repeating a row.
    """

    def __init__(self, columns: tuple[int, ...]) -> None:
        self._columns = columns
        self._pick = column_picker(columns)
        self._pending: _PendingOrder | None = None
        self._last_line = 0

    def add(self, record: Record) -> Batch | None:
        batch: Batch | None = None
        row: SalesRow | None = None
        problem = record.problem
        if record.fields is not None and problem is None:
            try:
                row = parse_row(record.fields, self._pick, record.first_line)
            except RowProblem as error:
                problem = str(error)
        number = row.order_number if row is not None else order_number_of(record.fields, self._columns)
        pending = self._pending
        if number is not None and (pending is None or pending.order_number != number):
            batch = self._close_pending()
            pending = self._pending = _PendingOrder(number)
        if pending is None:
            # A bad row that names no order, read while no order is open.
            batch = Batch(failures=[RowFailure(record.first_line, problem or "unreadable row")])
            batch.rows = 1
        elif row is not None and number is not None:
            pending.rows.append(row)
        elif number is not None:
            pending.problems.append(RowFailure(record.first_line, problem or "unreadable row"))
        else:
            pending.held.append(RowFailure(record.first_line, problem or "unreadable row"))
        if batch is not None:
            batch.through_line = self._last_line if pending is not None else record.last_line
        self._last_line = record.last_line
        return batch

    def finish(self) -> Batch:
        batch = self._close_pending() or Batch()
        batch.through_line = self._last_line
        return batch

    def _close_pending(self) -> Batch | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        order, failures = _close(pending)
        rows = len(pending.rows) + len(pending.problems) + len(pending.held)
        return Batch(orders=[order] if order else [], failures=failures, rows=rows)
