"""Queueing a sales report and serving its file: one path for the API's routes and the console's
members' pages, so both queue and hand out a report alike."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import StreamingResponse

from erp.core.caller import Caller
from erp.core.db import autocommit_engine
from erp.core.dispatch import TaskAccepted, dispatch
from erp.core.files import read_detached
from erp.features.reports import service
from erp.features.reports.schemas import SalesReportRequest
from erp.features.reports.tasks import generate_sales_report


async def queue_sales_report(request: Request, caller: Caller, body: SalesReportRequest) -> TaskAccepted:
    """Queue the report for the caller's organization (429 beyond the quotas, 503 without a broker)."""
    assert caller.organization_id is not None
    parameters = body.model_dump(mode="json")
    return await dispatch(request, caller, generate_sales_report, caller.organization_id, parameters)


async def report_download(organization_id: int, file_id: int) -> StreamingResponse:
    """The report file of the organization (ReportFileNotFound otherwise), streamed chunk by
    chunk, each read on a connection of its own: none is held while the client reads."""
    async with autocommit_engine().connect() as connection:
        stored = await service.get_report_file(organization_id, file_id, connection=connection)
    return StreamingResponse(
        read_detached(file_id, autocommit_engine().connect),
        media_type=stored.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{stored.name}"',
            "Content-Length": str(stored.size_bytes),
        },
    )
