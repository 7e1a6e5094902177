# erp/features/order_audits/router.py
"""`POST /api/v1/organizations/{organization_id}/order-audits`: queue an audit of the orders."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from erp.accounts.dependencies import OrganizationMember
from erp.core.db import DbSession
from erp.core.dispatch import dispatch
from erp.core.http_errors import error_responses
from erp.features.order_audits import service
from erp.features.order_audits.schemas import OrderAuditAccepted
from erp.features.order_audits.tasks import run_order_audit

router = APIRouter(prefix="/api/v1/organizations/{organization_id}/order-audits", tags=["order audits"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OrderAuditAccepted,
    summary="Queue an audit of the organization's sales orders",
    description="Follow the task at `status_url`: PROGRESS counts the orders checked; the result lists mismatches.",
    responses=error_responses(401, 403, 503),
)
async def request_order_audit(request: Request, caller: OrganizationMember, session: DbSession) -> OrderAuditAccepted:
    assert caller.organization_id is not None
    audit = await service.start_audit(caller.organization_id, session=session)
    accepted = await dispatch(request, caller, run_order_audit, audit.id)
    return OrderAuditAccepted(**accepted.model_dump(), audit_id=audit.id)
