from __future__ import annotations

from fastapi import APIRouter, Request, status

from erp.accounts.dependencies import CurrentCaller
from erp.core.dispatch import ERRORS, TaskAccepted, dispatch
from erp.core.http_errors import error_responses
from erp.core.idempotency import REPLAYED_RESPONSE, IdempotencyKey
from erp.features.ping.tasks import ping

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


@router.post(
    "/ping",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Queue a round trip through worker and database",
    responses={**ERRORS, **error_responses(429), **REPLAYED_RESPONSE},  # 429: the task rate limits (erp.core.quotas)
)
async def dispatch_ping(request: Request, caller: CurrentCaller, idempotency: IdempotencyKey) -> TaskAccepted:
    return await idempotency.once(caller, TaskAccepted, lambda: dispatch(request, caller, ping))
