"""Listing the alerts raised from the run ledger (delivered to webhooks by a worker task)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.tasks.ledger_kinds import AlertKind
from erp.tasks.scheduler_models import PeriodicTaskAlertDB


async def list_alerts(
    *,
    session: AsyncSession,
    delivered: bool | None,
    kind: AlertKind | None,
    periodic_task_id: int | None,
    limit: int,
    offset: int,
) -> tuple[list[PeriodicTaskAlertDB], bool]:
    query = select(PeriodicTaskAlertDB)
    if delivered is not None:
        query = query.where(
            PeriodicTaskAlertDB.delivered_at.is_not(None) if delivered else PeriodicTaskAlertDB.delivered_at.is_(None)
        )
    if kind is not None:
        query = query.where(PeriodicTaskAlertDB.kind == kind)
    if periodic_task_id is not None:
        query = query.where(PeriodicTaskAlertDB.periodic_task_id == periodic_task_id)
    rows = list(
        await session.scalars(
            query.order_by(PeriodicTaskAlertDB.created_at.desc(), PeriodicTaskAlertDB.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    )
    return rows[:limit], len(rows) > limit
