"""`/api/v1/organizations/{organization_id}/imports`: upload a sales-order CSV, follow its import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from erp.accounts.dependencies import OrganizationMember
from erp.core.config import get_settings
from erp.core.db import DbSession
from erp.core.http_errors import error_responses
from erp.core.idempotency import REPLAYED_RESPONSE, IdempotencyKey
from erp.core.input_types import DatabaseId, StoredText
from erp.core.request_bodies import accepts_body_up_to
from erp.features.data_processing import downloads, submission, upload
from erp.features.data_processing.dependencies import UploadSlot
from erp.features.data_processing.exceptions import UploadTooLarge
from erp.features.data_processing.models import DataImportDB, DataImportErrorDB
from erp.features.data_processing.parsing import EXAMPLE_HEADER
from erp.features.data_processing.schemas import DataImport, DataImportList, ImportAccepted, RowError

router = APIRouter(prefix="/api/v1/organizations/{organization_id}/imports", tags=["data imports"])

IMPORT_ROUTE = "get_data_import"
ERRORS_ROUTE = "download_data_import_errors"
ACCEPTED_CONTENT_TYPES = {"text/csv", "application/csv", "text/plain", "application/octet-stream"}


def _content_type(request: Request) -> str | None:
    value = request.headers.get("content-type")
    return value.split(";")[0].strip().lower() if value else None


@router.post(
    "/sales-orders",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ImportAccepted,
    summary="Upload a CSV of sales orders and queue its import",
    description=(
        f"The body is the CSV file itself (`curl --data-binary @orders.csv -H 'Content-Type: text/csv'`), "
        f"UTF-8 with or without BOM, header `{EXAMPLE_HEADER}` (any order), one row per order line; the "
        "rows of an order are next to each other. The upload is checked while it streams in: a wrong "
        "encoding or header is a 422 at once, a file over DATA_IMPORT_MAX_UPLOAD_BYTES a 413; either way "
        "nothing is kept. At most UPLOAD_MAX_CONCURRENT_PER_USER uploads of a user and "
        "UPLOAD_MAX_CONCURRENT_PER_ORGANIZATION of an organization may be under way at once, and at most "
        "DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION imports queued or running (429 with Retry-After beyond, "
        "as for the task rate limits). An upload that would take the organization's stored files past "
        "STORAGE_QUOTA_BYTES_PER_ORGANIZATION is a 413 naming the quota. The uploaded file is deleted once "
        "its import is done or has failed (its failed rows stay readable). Orders already present (same "
        "order_number) are skipped: importing a file twice adds nothing."
    ),
    responses={**error_responses(401, 403, 408, 413, 415, 422, 429, 503), **REPLAYED_RESPONSE},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
@accepts_body_up_to(lambda: get_settings().DATA_IMPORT_MAX_UPLOAD_BYTES, lambda limit: str(UploadTooLarge(limit)))
async def upload_sales_orders(
    request: Request,
    caller: OrganizationMember,
    session: DbSession,
    _slot: UploadSlot,
    idempotency: IdempotencyKey,
    filename: Annotated[
        StoredText, Query(max_length=255, description="the file's name, shown with the import")
    ] = "upload.csv",
) -> ImportAccepted:
    content_type = _content_type(request)
    if content_type is not None and content_type not in ACCEPTED_CONTENT_TYPES:
        raise HTTPException(
            415,
            f"send the CSV file itself as the body with Content-Type text/csv (got {content_type}); "
            "e.g. curl --data-binary @orders.csv -H 'Content-Type: text/csv'",
        )
    assert caller.organization_id is not None
    organization_id = caller.organization_id
    limit = get_settings().DATA_IMPORT_MAX_UPLOAD_BYTES
    declared = request.headers.get("content-length")
    declared_bytes = int(declared) if declared is not None and declared.isdigit() else None
    if declared_bytes is not None and declared_bytes > limit:
        raise HTTPException(413, str(UploadTooLarge(limit)))

    async def store_and_queue(body: AsyncIterator[bytes]) -> ImportAccepted:
        # A replayed retry never gets here, so it is never refused for limits its first try met.
        data_import, accepted = await submission.upload_and_queue(
            request, caller, filename, body, session=session, declared_bytes=declared_bytes
        )
        import_url = request.url_for(IMPORT_ROUTE, organization_id=organization_id, import_id=data_import.id)
        return ImportAccepted(**accepted.model_dump(), import_id=data_import.id, import_url=import_url.path)

    # The body is read once, as it streams into the file store, and hashed on the way (see
    # erp.core.idempotency): a retry with the same key stores and queues nothing.
    return await idempotency.once_streamed(caller, ImportAccepted, request.stream(), store_and_queue, max_bytes=limit)


@router.get(
    "/{import_id}",
    name=IMPORT_ROUTE,
    response_model=DataImport,
    summary="An import's state, counts and first failed rows",
    responses=error_responses(401, 403, 404),
)
async def get_data_import(
    request: Request,
    import_id: DatabaseId,
    caller: OrganizationMember,
    session: DbSession,
    errors: Annotated[int, Query(ge=0, le=1000, description="how many failed rows to include")] = 20,
) -> DataImport:
    assert caller.organization_id is not None
    data_import = await upload.get_import(caller.organization_id, import_id, session=session)
    first = await upload.first_errors(import_id, errors, session=session)
    return _data_import_out(request, data_import, first)


@router.get(
    "",
    response_model=DataImportList,
    summary="The organization's imports, newest first (their failed rows at each import's own URL)",
    responses=error_responses(401, 403, 404),
)
async def list_data_imports(
    request: Request,
    caller: OrganizationMember,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[
        DatabaseId | None, Query(description="the `next_before` of the page before (keyset paging)")
    ] = None,
) -> DataImportList:
    assert caller.organization_id is not None
    found = await upload.list_imports(caller.organization_id, limit + 1, session=session, before_id=before)
    return DataImportList(
        items=[_data_import_out(request, data_import, []) for data_import in found[:limit]],
        next_before=found[limit - 1].id if len(found) > limit else None,
    )


def _data_import_out(request: Request, data_import: DataImportDB, first: list[DataImportErrorDB]) -> DataImport:
    errors_url = request.url_for(
        ERRORS_ROUTE, organization_id=data_import.organization_id, import_id=data_import.id
    ).path
    return DataImport(
        id=data_import.id,
        organization_id=data_import.organization_id,
        kind=data_import.kind,
        filename=data_import.filename,
        size_bytes=data_import.size_bytes,
        status=data_import.status,
        task_id=data_import.task_id,
        attempts=data_import.attempts,
        rows_read=data_import.rows_read,
        rows_imported=data_import.rows_imported,
        rows_skipped=data_import.rows_skipped,
        rows_failed=data_import.rows_failed,
        orders_imported=data_import.orders_imported,
        error=data_import.error,
        errors=[RowError(line_number=row.line_number, reason=row.reason) for row in first],
        errors_url=errors_url,
        created_at=data_import.created_at,
        started_at=data_import.started_at,
        finished_at=data_import.finished_at,
    )


@router.get(
    "/{import_id}/errors.csv",
    name=ERRORS_ROUTE,
    summary="Every failed row of an import, as CSV (line_number, reason)",
    response_class=StreamingResponse,
    responses={**error_responses(401, 403, 404), 200: {"content": {"text/csv": {}}}},
)
async def download_data_import_errors(
    import_id: DatabaseId, caller: OrganizationMember, session: DbSession
) -> StreamingResponse:
    assert caller.organization_id is not None
    return await downloads.errors_csv(caller.organization_id, import_id, session=session)
