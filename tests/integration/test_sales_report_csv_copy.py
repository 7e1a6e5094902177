"""The CSV that PostgreSQL writes (COPY ... (FORMAT csv)) is byte for byte the CSV the Python
writer (erp.core.spreadsheet_cells, CsvReport) writes for the same rows: quoting, formula
escapes, line ends, empty text and NULL, unicode and amounts."""

from __future__ import annotations

import io
from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Integer, Numeric, String, insert, select, text, values
from sqlalchemy.sql import column

from erp.core.files import file_store
from erp.core.pg_copy import copy_out
from erp.core.spreadsheet_cells import CrlfRecords, CsvCells, csv_text_sql
from erp.features.reports.formatting import CsvReport, ReportRow, amount_number, group_label
from erp.features.reports.schemas import Grouping, SalesReportRequest
from erp.features.reports.service import aggregate_query, generate_sales_report
from erp.sales.models import SalesOrderDB

TRICKY_TEXTS = [
    "Acme",
    'Acme, "Ltd"',
    "two\nlines",
    "carriage\rreturn",
    "crlf\r\ninside",
    "trailing newline\n",
    '"',
    ",",
    "=SUM(A1:A2)",
    "+1",
    "-2",
    "@cmd",
    "\tTab",
    "\r=1+1",
    "\n=1+1",
    " =1",
    "'quoted",
    "Zürich – 東京 ✓",
    "back\\slash",
    "\\.",
    "",
    "=",
]


@pytest.fixture
def member(clean_tables, make_user):
    return make_user(role="member", organization="Acme")


async def copied(session, statement) -> tuple[bytes, int]:
    records = CrlfRecords()
    data = b"".join([records.convert(piece) async for piece in copy_out(session, statement, format="csv")])
    return data, records.records


@pytest.mark.anyio
async def test_cells_written_by_postgresql_equal_the_python_writers(erp_session):
    # Amounts as PostgreSQL gives them back: the column's two decimals.
    rows = [
        (text, number, (Decimal(number * 7) / 100).quantize(Decimal("0.01")))
        for number, text in enumerate(TRICKY_TEXTS, start=1)
    ]
    rows += [(None, 100, Decimal("-0.50")), ("x", -3, Decimal("123456789012.05")), ("y", 0, Decimal("0.00"))]
    table = values(
        column("text", String), column("number", Integer), column("amount", Numeric(14, 2)), name="cells"
    ).data(rows)
    statement = select(csv_text_sql(table.c.text), table.c.number, table.c.amount).order_by(table.c.number)

    data, records = await copied(erp_session, statement)

    expected = io.StringIO(newline="")
    CsvCells(expected).writerows(sorted(rows, key=lambda row: row[1]))
    assert data == expected.getvalue().encode()
    assert records == len(rows)


@pytest.mark.anyio
@pytest.mark.parametrize("group_by", list(Grouping))
async def test_the_stored_csv_report_equals_the_python_writers(erp_session, member, group_by):
    start = date(2025, 12, 27)  # ISO week 52 of 2025, then 2026's week 1 (labels across the year)
    await erp_session.execute(
        insert(SalesOrderDB),
        [
            {
                "organization_id": member.organization_id,
                "order_number": f"T-{number}",
                "order_date": start + timedelta(days=number * 3),
                "customer": TRICKY_TEXTS[number % len(TRICKY_TEXTS)],
                "currency": ("EUR", "USD", "CHF")[number % 3],
                "amount": Decimal(number * 137 % 100_000) / 100,
            }
            for number in range(120)
        ],
    )
    request = SalesReportRequest(date_from=start, date_to=start + timedelta(days=365), group_by=group_by)
    progress: list[dict] = []

    result = await generate_sales_report(
        member.organization_id, request.model_dump(mode="json"), session=erp_session, progress=progress.append
    )

    stored = b"".join([piece async for piece in file_store(erp_session).read(result["file_id"])])
    python_report = CsvReport(group_by)
    aggregate = (await erp_session.execute(aggregate_query(member.organization_id, request))).all()
    python_rows = [
        ReportRow(group_label(group_by, row.group_key), row.currency, row.orders, row.amount) for row in aggregate
    ]
    expected = python_report.add_rows([]) + python_report.add_rows(python_rows)
    assert stored == expected
    assert result["rows"] == len(python_rows) > 3
    assert result["size_bytes"] == len(expected)
    assert progress[0] == {"stage": "aggregating"}
    assert progress[-1] == {"stage": "storing", "rows_written": len(python_rows)}
    assert str(amount_number(python_rows[0].amount)) in stored.decode()


@pytest.mark.anyio
async def test_a_reader_that_stops_early_leaves_the_connection_ready(erp_session):
    """A report can stop midway (an error while writing it): the rest of the COPY in flight is
    dropped and the session's connection serves the next statement at once."""
    statement = text("SELECT repeat('x', 1000), n FROM generate_series(1, 20000) AS n")  # 20 MB
    pieces = copy_out(erp_session, statement, format="csv")
    assert (await anext(pieces)).startswith(b"x" * 1000)
    await pieces.aclose()

    assert (await erp_session.execute(text("SELECT 41 + 1"))).scalar_one() == 42


@pytest.mark.anyio
async def test_an_error_of_the_statement_reaches_the_reader(erp_session):
    with pytest.raises(Exception, match="division by zero"):
        async for _ in copy_out(erp_session, text("SELECT 1 / (n - 3) FROM generate_series(1, 5) AS n")):
            pass
