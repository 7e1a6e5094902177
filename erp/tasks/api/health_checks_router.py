"""`GET /api/v1/admin/health-checks`: the latest results of the periodic health check (superusers)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from erp.accounts.dependencies import SuperuserCaller
from erp.core.db import DbSession
from erp.core.http_errors import error_responses
from erp.tasks.health_check_models import HealthCheckResultDB

router = APIRouter(prefix="/api/v1/admin/health-checks", tags=["admin: health checks"])


class HealthCheckResult(BaseModel):
    checked_at: datetime
    healthy: bool
    duration_ms: float = Field(description="the whole run; the checks run side by side")
    worker: str = Field(description="host:pid of the worker that ran it")
    checks: dict[str, dict[str, Any]] = Field(
        description="per check (postgresql, redis, queues, beat, workers): ok, duration_ms, detail and what it found",
        examples=[{"postgresql": {"ok": True, "duration_ms": 1.3, "detail": "ok"}}],
    )


class HealthCheckResults(BaseModel):
    items: list[HealthCheckResult] = Field(description="newest first")


@router.get(
    "",
    response_model=HealthCheckResults,
    summary="Latest periodic health check results, with how long each check took",
    responses=error_responses(401, 403),
)
async def list_health_checks(
    caller: SuperuserCaller, session: DbSession, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> HealthCheckResults:
    rows = await session.scalars(
        select(HealthCheckResultDB)
        .order_by(HealthCheckResultDB.checked_at.desc(), HealthCheckResultDB.id.desc())
        .limit(limit)
    )
    return HealthCheckResults(
        items=[
            HealthCheckResult(
                checked_at=row.checked_at,
                healthy=row.healthy,
                duration_ms=row.duration_ms,
                worker=row.worker,
                checks=row.checks,
            )
            for row in rows
        ]
    )
