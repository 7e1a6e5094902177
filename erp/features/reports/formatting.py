"""What a report looks like: group labels, amounts, file names, and the CSV and XLSX writers.

Pure logic (no database): the service feeds rows in, the writers give bytes out, a piece at a
time (and the labels as SQL expressions, for the CSV that PostgreSQL writes). Both writers turn
values into cells through erp.core.spreadsheet_cells, so a customer name that looks like a
formula stays text in either format. Each row is one group in one currency: amounts in
different currencies are never added together, not in the rows and not in the totals (one total
per currency).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import IO, Any

from sqlalchemy import ColumnElement, func

from erp.core.spreadsheet_cells import CsvCells, xlsx_cell, xlsx_row
from erp.features.reports.schemas import Grouping, ReportFormat, SalesReportRequest

CONTENT_TYPES = {
    ReportFormat.csv: "text/csv; charset=utf-8",
    ReportFormat.xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
# Bytes read back from the finished XLSX per piece handed to the file store.
READ_PIECE_BYTES = 256 * 1024


def group_label(group_by: Grouping, value: date | str) -> str:
    """`2026-03-04` (day), `2026-W10` (ISO week of that Monday), `2026-03` (month), or the customer."""
    if group_by is Grouping.customer:
        return str(value)
    assert isinstance(value, date)
    if group_by is Grouping.day:
        return value.isoformat()
    if group_by is Grouping.week:
        year, week, _ = value.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{value.year}-{value.month:02d}"


# `group_label` as PostgreSQL's to_char patterns, for the CSV that PostgreSQL writes itself.
LABEL_PATTERNS = {Grouping.day: "YYYY-MM-DD", Grouping.week: 'IYYY-"W"IW', Grouping.month: "YYYY-MM"}


def group_label_sql(group_by: Grouping, key: ColumnElement[Any]) -> ColumnElement[Any]:
    """`group_label` of the aggregate's group key, as SQL (tests hold the two equal)."""
    if group_by is Grouping.customer:
        return key
    return func.to_char(key, LABEL_PATTERNS[group_by])


def amount_number(amount: Decimal) -> Decimal:
    """An amount as the CSV writes it: plain digits and two decimals, no thousands separator."""
    return amount.quantize(Decimal("0.01"))


def report_filename(request: SalesReportRequest) -> str:
    return f"sales-{request.date_from}-to-{request.date_to}-by-{request.group_by.value}.{request.format.value}"


def header(group_by: Grouping) -> list[str]:
    return ["customer" if group_by is Grouping.customer else "period", "currency", "orders", "amount"]


@dataclass(frozen=True, slots=True)
class ReportRow:
    group: str
    currency: str
    orders: int
    amount: Decimal


@dataclass
class CurrencyTotals:
    """Orders and amount per currency, never across currencies."""

    by_currency: dict[str, tuple[int, Decimal]] = field(default_factory=dict)

    def add(self, row: ReportRow) -> None:
        orders, amount = self.by_currency.get(row.currency, (0, Decimal(0)))
        self.by_currency[row.currency] = (orders + row.orders, amount + row.amount)

    def rows(self) -> list[ReportRow]:
        return [
            ReportRow("total", currency, orders, amount)
            for currency, (orders, amount) in sorted(self.by_currency.items())
        ]


class CsvReport:
    """CSV text, one piece per `add_rows` call: the rows; no totals (each line is data).

    The definition of the report's CSV: the service has PostgreSQL write the rows
    (`service.csv_rows_query`) and writes only the header here; tests hold PostgreSQL's bytes
    identical to this writer's for the same rows.
    """

    def __init__(self, group_by: Grouping) -> None:
        self._buffer = io.StringIO()
        self._writer = CsvCells(self._buffer)
        self._writer.writerow(header(group_by))

    def add_rows(self, rows: list[ReportRow]) -> bytes:
        # The amount is a number (two places), never escaped as text: a negative amount is data.
        self._writer.writerows((row.group, row.currency, row.orders, amount_number(row.amount)) for row in rows)
        return self._take()

    def finish(self, totals: CurrencyTotals) -> Iterator[bytes]:
        yield self._take()

    def _take(self) -> bytes:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()


class XlsxReport:
    """An XLSX workbook in openpyxl's write-only mode (rows go to a temporary file as they come,
    so memory stays flat), with a second sheet of totals per currency. Its bytes exist only once
    the workbook is closed, so `add_rows` gives nothing and `finish` gives everything."""

    def __init__(self, group_by: Grouping) -> None:
        from openpyxl import Workbook  # imported on use: only XLSX reports pay for it

        self._workbook = Workbook(write_only=True)
        self._rows = self._workbook.create_sheet("Sales")
        self._rows.append(xlsx_row(self._rows, header(group_by)))

    def _amount_cell(self, sheet: Any, amount: Decimal) -> Any:
        return xlsx_cell(sheet, amount, number_format="#,##0.00")

    def add_rows(self, rows: list[ReportRow]) -> bytes:
        for row in rows:
            self._rows.append(
                [
                    *xlsx_row(self._rows, (row.group, row.currency, row.orders)),
                    self._amount_cell(self._rows, row.amount),
                ]
            )
        return b""

    def finish(self, totals: CurrencyTotals) -> Iterator[bytes]:
        sheet = self._workbook.create_sheet("Totals by currency")
        sheet.append(xlsx_row(sheet, ["currency", "orders", "amount"]))
        for row in totals.rows():
            sheet.append([*xlsx_row(sheet, (row.currency, row.orders)), self._amount_cell(sheet, row.amount)])
        with tempfile.TemporaryFile() as file:
            self._workbook.save(file)
            yield from _pieces(file)


def _pieces(file: IO[bytes]) -> Iterator[bytes]:
    file.seek(0)
    while piece := file.read(READ_PIECE_BYTES):
        yield piece
