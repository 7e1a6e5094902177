# erp/features/order_audits/service.py
"""Order audits: the work, in async functions that take their session as a keyword.

The endpoint calls `start_audit` with the request's session; the task calls `run_audit` through
`run_service`, which hands it a fresh session and commits it when it returns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.clock import utcnow
from erp.core.progress import Progress, no_progress
from erp.features.order_audits.models import OrderAuditDB
from erp.sales.models import SalesOrderDB, SalesOrderLineDB

# Orders read per query: progress is reported after each batch.
BATCH_ORDERS = 500
# Order numbers of mismatches listed in the task's result (the count has them all).
LISTED_MISMATCHES = 20


class UnknownAudit(Exception):
    """No such audit: a bad parameter, which no retry will mend."""


async def start_audit(organization_id: int, *, session: AsyncSession) -> OrderAuditDB:
    """Record a queued audit and commit it, so the task, in a session of its own, finds it."""
    audit = OrderAuditDB(organization_id=organization_id)
    session.add(audit)
    await session.commit()
    return audit


async def run_audit(audit_id: int, *, session: AsyncSession, progress: Progress = no_progress) -> dict[str, Any]:
    """Compare each order's amount with the sum of its lines, a batch at a time."""
    audit = await session.get(OrderAuditDB, audit_id, with_for_update=True)
    if audit is None:
        raise UnknownAudit(f"there is no order audit {audit_id}")
    audit.state = "running"
    orders = SalesOrderDB.organization_id == audit.organization_id
    total = (await session.execute(select(func.count()).select_from(SalesOrderDB).where(orders))).scalar_one()
    lines_total = func.coalesce(func.sum(SalesOrderLineDB.quantity * SalesOrderLineDB.unit_price), 0)
    checked, after_id = 0, 0
    mismatched: list[str] = []
    while True:
        batch = (
            await session.execute(
                select(SalesOrderDB.id, SalesOrderDB.order_number, SalesOrderDB.amount, lines_total)
                .outerjoin(SalesOrderLineDB, SalesOrderLineDB.order_id == SalesOrderDB.id)
                .where(orders, SalesOrderDB.id > after_id)
                .group_by(SalesOrderDB.id)
                .order_by(SalesOrderDB.id)
                .limit(BATCH_ORDERS)
            )
        ).all()
        if not batch:
            break
        checked += len(batch)
        mismatched += [order_number for _, order_number, amount, summed in batch if amount != summed]
        after_id = batch[-1].id
        progress({"orders_checked": checked, "orders_total": total})
    audit.state, audit.orders_checked, audit.mismatches = "done", checked, len(mismatched)
    audit.finished_at = utcnow()
    return {
        "audit_id": audit.id,
        "orders_checked": checked,
        "mismatches": len(mismatched),
        "mismatched_orders": mismatched[:LISTED_MISMATCHES],
    }
