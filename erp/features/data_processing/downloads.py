"""An import's failed rows as a CSV download: one path for the API's route and the console's
members' pages."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.db import autocommit_engine
from erp.core.spreadsheet_cells import CsvCells
from erp.features.data_processing import upload


async def _error_csv(import_id: int) -> AsyncIterator[bytes]:
    """The failed rows as CSV, each page read on a connection of its own.

    The request's session is closed before a streamed body is sent, and a client that reads
    slowly must hold neither a transaction nor a pooled connection: each page's autocommit
    connection is back in the pool before the page is handed on.
    """
    buffer = io.StringIO()
    writer = CsvCells(buffer)  # a reason may quote what the file held: cells, never formulas
    writer.writerow(["line_number", "reason"])
    yield buffer.getvalue().encode()
    after_line = 0
    while True:
        async with autocommit_engine().connect() as connection:
            page = await upload.error_page(import_id, after_line, connection=connection)
        if not page:
            return
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(page)
        yield buffer.getvalue().encode()
        after_line = page[-1][0]


async def errors_csv(organization_id: int, import_id: int, *, session: AsyncSession) -> StreamingResponse:
    """Every failed row of the organization's import (ImportNotFound otherwise), as CSV."""
    await upload.get_import(organization_id, import_id, session=session)
    return StreamingResponse(
        _error_csv(import_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-errors.csv"'},
    )
