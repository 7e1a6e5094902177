# erp/features/order_audits/schemas.py
"""What the order-audit endpoint answers."""

from __future__ import annotations

from erp.core.dispatch import TaskAccepted


class OrderAuditAccepted(TaskAccepted):
    """The task's id and status URL (its result is the audit's outcome), and the audit's id."""

    audit_id: int
