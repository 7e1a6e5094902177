"""`/api/v1/organizations/{organization_id}/reports`: queue a sales report, download it."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import StreamingResponse

from erp.accounts.dependencies import OrganizationMember
from erp.core.dispatch import TaskAccepted
from erp.core.http_errors import error_responses
from erp.core.idempotency import REPLAYED_RESPONSE, IdempotencyKey
from erp.core.input_types import DatabaseId
from erp.features.reports import delivery
from erp.features.reports.schemas import SalesReportRequest

router = APIRouter(prefix="/api/v1/organizations/{organization_id}/reports", tags=["reports"])


@router.post(
    "/sales",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Queue a sales report (CSV or XLSX) of the organization",
    description=(
        "Orders and amount per day, ISO week, month or customer, one row per group and currency "
        "(currencies are never added together). Follow the task at `status_url` (PROGRESS shows the "
        "stage and rows written); its result has `download_url`. The range covers at most "
        "REPORT_MAX_RANGE_DAYS days (422 naming date_to beyond). At most REPORT_MAX_RUNNING_PER_ORGANIZATION "
        "reports of an organization may be queued or running at once, and TASKS_PER_MINUTE_PER_USER and "
        "TASKS_PER_MINUTE_PER_ORGANIZATION tasks queued per minute (429 with Retry-After beyond)."
    ),
    responses={**error_responses(401, 403, 422, 429, 503), **REPLAYED_RESPONSE},
)
async def request_sales_report(
    request: Request, body: SalesReportRequest, caller: OrganizationMember, idempotency: IdempotencyKey
) -> TaskAccepted:
    return await idempotency.once(caller, TaskAccepted, lambda: delivery.queue_sales_report(request, caller, body))


@router.get(
    "/files/{file_id}",
    summary="Download a generated report (members of the organization)",
    response_class=StreamingResponse,
    responses={
        **error_responses(401, 403, 404),
        200: {"content": {"text/csv": {}, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {}}},
    },
)
async def download_report(file_id: DatabaseId, caller: OrganizationMember) -> StreamingResponse:
    assert caller.organization_id is not None
    return await delivery.report_download(caller.organization_id, file_id)
