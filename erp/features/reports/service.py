"""The sales report: aggregated by PostgreSQL, written piece by piece, stored in the file store.

The database does the arithmetic (one GROUP BY over the organization's orders in the range,
per group and currency). A CSV is written by PostgreSQL too (`COPY ... TO STDOUT (FORMAT csv)`,
erp.core.pg_copy), its pieces streaming into the file store; an XLSX's rows stream out of a
server-side cursor into its writer, whose output streams into the file store. No step holds the
whole report.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Date, Select, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from erp.core.files import StoredFile, file_store
from erp.core.pg_copy import copy_out
from erp.core.progress import Progress, no_progress
from erp.core.spreadsheet_cells import CrlfRecords, csv_text_sql
from erp.features.reports.exceptions import InvalidReportParameters, ReportFileNotFound
from erp.features.reports.formatting import (
    CONTENT_TYPES,
    CsvReport,
    CurrencyTotals,
    ReportRow,
    XlsxReport,
    group_label,
    group_label_sql,
    report_filename,
)
from erp.features.reports.schemas import Grouping, ReportFormat, SalesReportRequest
from erp.sales.models import SalesOrderDB

logger = logging.getLogger(__name__)

FILE_PURPOSE = "report"
# The path the task's result points to (erp.features.reports.router serves it).
DOWNLOAD_PATH = "/api/v1/organizations/{organization_id}/reports/files/{file_id}"
# Rows fetched from the cursor (and written) at a time.
ROWS_PER_FETCH = 1000


def parse_parameters(parameters: dict[str, Any]) -> SalesReportRequest:
    """The task's parameters, or InvalidReportParameters naming each field that is wrong."""
    try:
        return SalesReportRequest.model_validate(parameters)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'parameters'}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise InvalidReportParameters(f"invalid sales report parameters: {problems}") from None


def aggregate_query(organization_id: int, request: SalesReportRequest) -> Select[Any]:
    """Orders and amount per group and currency, ordered by group then currency."""
    key = _group_key(request)
    return _grouped(organization_id, request, key, key.label("group_key"), SalesOrderDB.currency)


def csv_rows_query(organization_id: int, request: SalesReportRequest) -> Select[Any]:
    """`aggregate_query` as the CSV's cells, for PostgreSQL to write (`COPY ... (FORMAT csv)`):
    the group's label (`group_label_sql`) and the currency as `csv_text_sql` encodes text, the
    orders, the amount with its two decimals (the column's scale, as `amount_number` writes it).
    One level, as the aggregate: the cells are expressions of the grouped columns."""
    key = _group_key(request)
    return _grouped(
        organization_id,
        request,
        key,
        csv_text_sql(group_label_sql(request.group_by, key)),
        csv_text_sql(SalesOrderDB.currency.expression),
    )


def _group_key(request: SalesReportRequest) -> Any:
    if request.group_by is Grouping.customer:
        return SalesOrderDB.customer
    if request.group_by is Grouping.day:
        return SalesOrderDB.order_date
    return cast(func.date_trunc(request.group_by.value, SalesOrderDB.order_date), Date)


def _grouped(organization_id: int, request: SalesReportRequest, key: Any, group: Any, currency: Any) -> Select[Any]:
    """`group`, `currency` (expressions of them), orders and amount per group key and currency, in that order."""
    return (
        select(group, currency, func.count().label("orders"), func.sum(SalesOrderDB.amount).label("amount"))
        .where(
            SalesOrderDB.organization_id == organization_id,
            SalesOrderDB.order_date.between(request.date_from, request.date_to),
        )
        .group_by(key, SalesOrderDB.currency)
        .order_by(key, SalesOrderDB.currency)
    )


async def _csv_bytes(
    organization_id: int, request: SalesReportRequest, session: AsyncSession, progress: Progress, counts: dict[str, int]
) -> AsyncIterator[bytes]:
    # PostgreSQL writes the rows (CsvReport's bytes exactly: tests hold the two identical), at
    # the speed of its own COPY; Python only turns line ends into CRLF and counts the rows.
    yield CsvReport(request.group_by).add_rows([])
    progress({"stage": "aggregating"})
    # The statement's estimated cost is just past jit_above_cost, and compiling it (about
    # 150 ms here) costs more than its few expressions per group save.
    await session.execute(text("SET LOCAL jit = off"))
    records = CrlfRecords()
    async for piece in copy_out(session, csv_rows_query(organization_id, request), format="csv"):
        yield records.convert(piece)
        counts["rows"] = records.records
        progress({"stage": "writing", "rows_written": records.records})
    progress({"stage": "storing", "rows_written": records.records})


async def _report_bytes(
    organization_id: int, request: SalesReportRequest, session: AsyncSession, progress: Progress, counts: dict[str, int]
) -> AsyncIterator[bytes]:
    if request.format is ReportFormat.csv:
        async for piece in _csv_bytes(organization_id, request, session, progress, counts):
            yield piece
        return
    writer = XlsxReport(request.group_by)
    totals = CurrencyTotals()
    progress({"stage": "aggregating"})
    result = await session.stream(aggregate_query(organization_id, request).execution_options(yield_per=ROWS_PER_FETCH))
    async for partition in result.partitions():
        rows = [
            ReportRow(group_label(request.group_by, row.group_key), row.currency, row.orders, row.amount)
            for row in partition
        ]
        for row in rows:
            totals.add(row)
        counts["rows"] += len(rows)
        if piece := writer.add_rows(rows):
            yield piece
        progress({"stage": "writing", "rows_written": counts["rows"]})
    progress({"stage": "storing", "rows_written": counts["rows"]})
    for piece in writer.finish(totals):
        yield piece


async def generate_sales_report(
    organization_id: int,
    parameters: dict[str, Any],
    *,
    session: AsyncSession,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Make the report, store it as a file of the organization; returns where to download it."""
    request = parse_parameters(parameters)
    counts = {"rows": 0}
    stored = await file_store(session).save(
        _report_bytes(organization_id, request, session, progress, counts),
        name=report_filename(request),
        content_type=CONTENT_TYPES[request.format],
        purpose=FILE_PURPOSE,
        organization_id=organization_id,
    )
    logger.info(
        "sales report %s: %s rows, %s bytes",
        stored.name,
        counts["rows"],
        stored.size_bytes,
        extra={"action": "reports.generated", "organization_id": organization_id, "file_id": stored.id},
    )
    return {
        "file_id": stored.id,
        "filename": stored.name,
        "download_url": DOWNLOAD_PATH.format(organization_id=organization_id, file_id=stored.id),
        "rows": counts["rows"],
        "size_bytes": stored.size_bytes,
        "content_type": stored.content_type,
        "expires_at": stored.expires_at.isoformat(),
    }


async def get_report_file(organization_id: int, file_id: int, *, connection: AsyncConnection) -> StoredFile:
    """A report file of this organization, or ReportFileNotFound."""
    try:
        stored = await file_store(connection).get(file_id)
    except LookupError:
        stored = None
    if stored is None or stored.organization_id != organization_id or stored.purpose != FILE_PURPOSE:
        raise ReportFileNotFound(f"organization {organization_id} has no report file {file_id}, or it has expired")
    return stored
