"""Sales-order imports, the web's part: the upload, checked while it streams, and reading an
import's state and failed rows. Plain async functions taking the session.

The body streams through `checked_upload` (size limit, UTF-8, header) into the file store; a
problem answers at once and leaves nothing behind (one transaction). The import itself is the
worker's (erp.features.data_processing.import_pipeline), which the web process never loads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from erp.core.config import get_settings
from erp.core.files import file_store
from erp.features.data_processing.exceptions import (
    ImportNotFound,
    InvalidUpload,
    StorageQuotaExceeded,
    UploadTooLarge,
)
from erp.features.data_processing.models import DataImportDB, DataImportErrorDB
from erp.features.data_processing.parsing import (
    EXAMPLE_HEADER,
    CsvRecords,
    EncodingProblem,
    HeaderProblem,
    LineLengths,
    LineTooLong,
    Record,
    Utf8Decoder,
    header_columns,
)

logger = logging.getLogger(__name__)

KIND_SALES_ORDERS = "sales_orders"
# The header must be complete within this many bytes of the upload.
MAX_HEADER_BYTES = 64 * 1024


async def checked_upload(body: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """The upload's bytes, passed on as they arrive, checked on the way.

    Raises UploadTooLarge past `limit` bytes, InvalidUpload for an empty file, a header that is
    not the expected one (as soon as the header line has arrived), bytes that are not UTF-8,
    or a line longer than MAX_LINE_CHARACTERS. The whole upload is decoded and its lines
    measured as it streams (both cost far less than storing), so a bad byte or an overlong
    line anywhere in the file is refused at upload time, naming its line: no import has to
    hold such a line.
    """
    decoder = Utf8Decoder()
    lines = LineLengths()
    records = CsvRecords()
    header_checked = False
    received = 0

    def check_header(found: list[Record]) -> None:
        nonlocal header_checked
        if not found:
            return
        header = found[0]
        if header.fields is None:
            raise InvalidUpload(f"the header line is not readable as CSV ({header.problem})")
        header_columns(header.fields)
        header_checked = True

    try:
        async for chunk in body:
            received += len(chunk)
            if received > limit:
                raise UploadTooLarge(limit)
            decoded = decoder.decode(chunk)
            lines.feed(decoded)
            if not header_checked:
                check_header(records.feed(decoded))
                if not header_checked and received > MAX_HEADER_BYTES:
                    raise InvalidUpload(f"no header line within the first {MAX_HEADER_BYTES:,} bytes")
            yield chunk
        decoded = decoder.decode(b"", final=True)
        lines.feed(decoded)
        if not header_checked:
            check_header(records.feed(decoded) + records.finish())
    except (EncodingProblem, HeaderProblem, LineTooLong) as error:
        raise InvalidUpload(str(error)) from None
    if received == 0 or not header_checked:
        raise InvalidUpload(f"the file is empty: expected a header ({EXAMPLE_HEADER}) and rows")


async def within_quota(
    body: AsyncIterable[bytes], organization_id: int, quota: int, stored: int
) -> AsyncIterator[bytes]:
    """The upload's bytes, cut with StorageQuotaExceeded once they would take the organization
    past its storage quota (`stored` bytes stored before the upload began)."""
    received = 0
    async for chunk in body:
        received += len(chunk)
        if stored + received > quota:
            raise StorageQuotaExceeded(organization_id, quota, stored)
        yield chunk


async def _lock_organization_storage(organization_id: int, *, session: AsyncSession) -> None:
    """Two uploads of one organization that end at once add their sizes one after the other
    (held until the upload's commit, a moment): the quota is exact, not off by one upload."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('erp:storage-quota'), :organization_id)"),
        {"organization_id": organization_id},
    )


async def create_sales_order_import(
    organization_id: int,
    created_by: int,
    filename: str,
    body: AsyncIterable[bytes],
    *,
    session: AsyncSession,
    declared_bytes: int | None = None,
) -> DataImportDB:
    """Store the uploaded CSV (checked while it streams) and a queued import of it; committed.

    The organization's storage quota (STORAGE_QUOTA_BYTES_PER_ORGANIZATION) is checked three
    times: against the declared Content-Length before the body is read, while it streams, and
    exactly, under a lock, just before the commit.
    """
    settings = get_settings()
    limit = settings.DATA_IMPORT_MAX_UPLOAD_BYTES
    quota = settings.STORAGE_QUOTA_BYTES_PER_ORGANIZATION
    stored_before = await file_store(session).stored_bytes(organization_id)
    await session.rollback()  # no connection held while the body streams in
    if declared_bytes is not None and stored_before + declared_bytes > quota:
        raise StorageQuotaExceeded(organization_id, quota, stored_before)
    # A problem raised by checked_upload ends the request before the commit: nothing is kept.
    stored = await file_store(session).save(
        within_quota(checked_upload(body, limit), organization_id, quota, stored_before),
        name=filename,
        content_type="text/csv",
        purpose="upload",
        organization_id=organization_id,
    )
    await _lock_organization_storage(organization_id, session=session)
    stored_now = await file_store(session).stored_bytes(organization_id)  # this upload included
    if stored_now > quota:
        raise StorageQuotaExceeded(organization_id, quota, stored_now - stored.size_bytes)
    data_import = DataImportDB(
        organization_id=organization_id,
        created_by=created_by,
        kind=KIND_SALES_ORDERS,
        file_id=stored.id,
        filename=filename,
        size_bytes=stored.size_bytes,
        status="queued",
    )
    session.add(data_import)
    await session.commit()
    logger.info(
        "data import %s stored (%s bytes)",
        data_import.id,
        stored.size_bytes,
        extra={"action": "data_import.uploaded", "import_id": data_import.id},
    )
    return data_import


async def set_task_id(import_id: int, task_id: str, *, session: AsyncSession) -> None:
    await session.execute(update(DataImportDB).where(DataImportDB.id == import_id).values(task_id=task_id))
    await session.commit()


async def discard_import(import_id: int, *, session: AsyncSession) -> None:
    """Remove an import that could not be queued, and its file (the caller gets a 503)."""
    data_import = await session.get(DataImportDB, import_id)
    if data_import is not None:
        if data_import.file_id is not None:
            await file_store(session).delete(data_import.file_id)
        await session.delete(data_import)
    await session.commit()


# --- reading an import ---------------------------------------------------------------------


async def get_import(organization_id: int, import_id: int, *, session: AsyncSession) -> DataImportDB:
    data_import = await session.get(DataImportDB, import_id)
    if data_import is None or data_import.organization_id != organization_id:
        raise ImportNotFound(f"organization {organization_id} has no data import {import_id}")
    return data_import


async def list_imports(
    organization_id: int, limit: int, *, session: AsyncSession, before_id: int | None = None
) -> list[DataImportDB]:
    """The organization's imports, newest first, `limit` of them with ids below `before_id`
    (keyset pagination: a page is one index range however deep it is)."""
    query = select(DataImportDB).where(DataImportDB.organization_id == organization_id)
    if before_id is not None:
        query = query.where(DataImportDB.id < before_id)
    return list(await session.scalars(query.order_by(DataImportDB.id.desc()).limit(limit)))


async def first_errors(import_id: int, limit: int, *, session: AsyncSession) -> list[DataImportErrorDB]:
    return list(
        await session.scalars(
            select(DataImportErrorDB)
            .where(DataImportErrorDB.import_id == import_id)
            .order_by(DataImportErrorDB.line_number)
            .limit(limit)
        )
    )


# Errors read per query when the whole list is downloaded.
ERROR_PAGE = 5000


async def error_page(import_id: int, after_line: int, *, connection: AsyncConnection) -> list[tuple[int, str]]:
    """Up to ERROR_PAGE errors of the import after line `after_line`, in line order (keyset
    pagination: a download reads each page on a connection of its own)."""
    rows = (
        await connection.execute(
            select(DataImportErrorDB.line_number, DataImportErrorDB.reason)
            .where(DataImportErrorDB.import_id == import_id, DataImportErrorDB.line_number > after_line)
            .order_by(DataImportErrorDB.line_number)
            .limit(ERROR_PAGE)
        )
    ).all()
    return [(row.line_number, row.reason) for row in rows]
