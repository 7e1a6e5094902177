"""Report labels, amounts, file names, totals per currency and the CSV writer (pure logic)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from erp.features.reports.formatting import (
    CsvReport,
    CurrencyTotals,
    ReportRow,
    amount_number,
    group_label,
    report_filename,
)
from erp.features.reports.schemas import Grouping, ReportFormat, SalesReportRequest


@pytest.mark.parametrize(
    ("group_by", "value", "label"),
    [
        (Grouping.day, date(2026, 3, 4), "2026-03-04"),
        (Grouping.week, date(2025, 12, 29), "2026-W01"),  # ISO week 1 of 2026 starts in 2025
        (Grouping.week, date(2026, 12, 28), "2026-W53"),
        (Grouping.month, date(2026, 3, 1), "2026-03"),
        (Grouping.customer, "Acme", "Acme"),
    ],
)
def test_group_labels(group_by, value, label):
    assert group_label(group_by, value) == label


def test_amounts_keep_two_decimals_without_separators():
    assert str(amount_number(Decimal("1234567.5"))) == "1234567.50"
    assert str(amount_number(Decimal("0"))) == "0.00"


def test_totals_are_per_currency_never_across():
    totals = CurrencyTotals()
    for row in (
        ReportRow("2026-01", "EUR", 2, Decimal("10.00")),
        ReportRow("2026-01", "USD", 1, Decimal("5.00")),
        ReportRow("2026-02", "EUR", 1, Decimal("1.50")),
    ):
        totals.add(row)
    assert totals.rows() == [
        ReportRow("total", "EUR", 3, Decimal("11.50")),
        ReportRow("total", "USD", 1, Decimal("5.00")),
    ]


def test_csv_writer_gives_the_header_then_each_piece_of_rows():
    report = CsvReport(Grouping.customer)
    piece = report.add_rows([ReportRow('Acme, "Ltd"', "EUR", 2, Decimal("3.5"))])
    assert piece.decode() == 'customer,currency,orders,amount\r\n"Acme, ""Ltd""",EUR,2,3.50\r\n'
    assert report.add_rows([]) == b""


def test_file_name_says_what_the_report_covers():
    request = SalesReportRequest(
        date_from=date(2026, 1, 1), date_to=date(2026, 3, 31), group_by=Grouping.week, format=ReportFormat.xlsx
    )
    assert report_filename(request) == "sales-2026-01-01-to-2026-03-31-by-week.xlsx"


def test_a_reversed_or_too_long_range_is_refused():
    with pytest.raises(ValueError, match="is after date_to"):
        SalesReportRequest(date_from=date(2026, 2, 1), date_to=date(2026, 1, 1))
    with pytest.raises(ValueError, match=r"more than 366 \(REPORT_MAX_RANGE_DAYS\)"):
        SalesReportRequest(date_from=date(2020, 1, 1), date_to=date(2026, 1, 1))
