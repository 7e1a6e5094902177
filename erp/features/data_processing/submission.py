"""Uploading a sales-order CSV and queueing its import: one path for the API's upload route and
the console's upload form, so both check, count and queue an upload alike."""

from __future__ import annotations

from collections.abc import AsyncIterable

from fastapi import HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core import quotas
from erp.core.caller import Caller
from erp.core.dispatch import TaskAccepted, dispatch
from erp.features.data_processing import upload
from erp.features.data_processing.exceptions import StorageQuotaExceeded, UploadTooLarge
from erp.features.data_processing.models import DataImportDB
from erp.features.data_processing.tasks import import_sales_orders


async def upload_and_queue(
    request: Request,
    caller: Caller,
    filename: str,
    body: AsyncIterable[bytes],
    *,
    session: AsyncSession,
    declared_bytes: int | None = None,
) -> tuple[DataImportDB, TaskAccepted]:
    """Store the upload (checked as it streams: InvalidUpload, 413) and queue its import.

    Refused for the caller's limits (429) before the body is read, not after (dispatch
    decides); an import that cannot be queued (503) leaves nothing behind.
    """
    assert caller.organization_id is not None
    await quotas.room_for(caller, import_sales_orders.name)
    try:
        data_import = await upload.create_sales_order_import(
            caller.organization_id, caller.user_id, filename, body, session=session, declared_bytes=declared_bytes
        )
    except (UploadTooLarge, StorageQuotaExceeded) as error:
        raise HTTPException(413, str(error)) from None
    try:
        accepted = await dispatch(request, caller, import_sales_orders, data_import.id)
    except HTTPException:
        await upload.discard_import(data_import.id, session=session)  # not queued: keep nothing
        raise
    await upload.set_task_id(data_import.id, accepted.task_id, session=session)
    return data_import, accepted
