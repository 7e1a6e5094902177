"""Reading a sales-order CSV: decoding, records, the header and rows. Pure logic, no I/O.

Each step feeds the next, and the line numbers and outcomes they carry agree from the bytes to
the orders; the last step, grouping rows into orders, is erp.features.data_processing.orders.

The file arrives in chunks of bytes (an upload streaming in, or chunks read back from the file
store) and is never whole in memory:

- `Utf8Decoder` decodes chunk by chunk (`codecs.getincrementaldecoder("utf-8-sig")`: UTF-8,
  with or without a byte-order mark) and names the line of the first byte that is not UTF-8.
- `CsvRecords` turns decoded text into CSV records with the stdlib `csv` module, handing it
  only complete lines; a record whose quoted field goes on past the text received so far is
  parsed again when more text has come, so a record may span chunks (and lines).
- `header_columns` checks the header; `parse_row` checks one row.
- `OrderAssembler` (erp.features.data_processing.orders) groups consecutive rows with the same `order_number` into one order: an
  order is imported whole or not at all, so one bad row rejects the rows of its order.

File format: a header naming the columns in `COLUMNS` (any order), then one row per order
line; the rows of an order are next to each other and agree on date, customer and currency.
"""

from __future__ import annotations

import codecs
import csv
import io
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

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


@dataclass(frozen=True, slots=True)
class Record:
    first_line: int  # physical line numbers in the file; line 1 is the header
    last_line: int
    fields: list[str] | None  # None when the csv module could not read it
    problem: str | None = None


class CsvRecords:
    """CSV records from text fed piece by piece: `feed(text)`, then `finish()` at the end.

    Both return the records complete so far. A blank line is no record (it is skipped).

    Each piece's complete lines go to one `csv.reader` at once (its C loop reads them from a
    StringIO; `line_num` says where each record ends). A record whose quoted field goes on
    past the lines received so far makes the reader fail at the end of its input: its lines
    are held back and read again, with the next piece, as the start of its text.
    """

    def __init__(self) -> None:
        self._pending = ""  # text not read yet: held-back lines, then the text after the last newline
        self._lines_done = 0

    def feed(self, text: str) -> list[Record]:
        if not text:
            return []
        text = self._pending + text
        end = text.rfind("\n") + 1
        self._pending = text[end:]
        return self._read(text[:end], at_end=False)

    def finish(self) -> list[Record]:
        text, self._pending = self._pending, ""
        return self._read(text, at_end=True)

    def _read(self, text: str, *, at_end: bool) -> list[Record]:
        records: list[Record] = []
        if not text:
            return records
        # strict: a quoted field left open at the end of the file, or text after a closing
        # quote, is a row error rather than a silently different value.
        reader = csv.reader(io.StringIO(text), strict=True)
        first = self._lines_done + 1
        done = 0  # lines of `text` read into records
        while True:
            try:
                fields: list[str] | None = next(reader)
                problem = None
            except StopIteration:
                break
            except csv.Error as error:
                if not at_end and reader.line_num >= text.count("\n"):
                    # It may go on in text not received yet: read its lines again later.
                    self._pending = "\n".join(text.split("\n")[done:]) + self._pending
                    break
                fields, problem = None, f"not readable as CSV: {error}"
            line_num = reader.line_num
            if fields or problem is not None:  # [] is a blank line
                records.append(Record(first + done, first + line_num - 1, fields, problem))
            done = line_num
        self._lines_done += done
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
# fields, match this at once (none of the four patterns matches a space, so each field matches
# its own pattern; the text holds no control character); a row that does not is checked field
# by field, for the message.
_FORMATTED = re.compile(
    "(?:{}) (?:{}) (?:{}) (?:{}) ".format(
        *(pattern.pattern.removesuffix(r"\Z") for pattern in (_DATE, _CURRENCY, _QUANTITY, _PRICE))
    )
    + f"[^{_CONTROL_CHARACTERS}]*"
    + r"\Z"
)
_MAX_ORDER_NUMBER, _MAX_CUSTOMER, _MAX_PRODUCT = (
    _TEXT_LIMITS[name] for name in ("order_number", "customer", "product")
)


def parse_row(fields: list[str], pick: ColumnPicker, line: int) -> SalesRow:
    """One CSV row as a SalesRow, or RowProblem naming the first column that is wrong."""
    if len(fields) != len(COLUMNS):
        raise RowProblem(f"expected {len(COLUMNS)} fields, found {len(fields)}")
    number, day, customer, currency, product, quantity, price = pick(fields)
    number, day, customer, currency = number.strip(), day.strip(), customer.strip(), currency.strip()
    product, quantity, price = product.strip(), quantity.strip(), price.strip()
    if not (
        0 < len(number) <= _MAX_ORDER_NUMBER
        and 0 < len(customer) <= _MAX_CUSTOMER
        and 0 < len(product) <= _MAX_PRODUCT
        and _FORMATTED.match(f"{day} {currency} {quantity} {price} {number}\t{customer}\t{product}")
    ):
        _explain(number, day, customer, currency, product, quantity, price)
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
