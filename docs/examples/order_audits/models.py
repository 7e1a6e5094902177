# erp/features/order_audits/models.py
"""Order audits: does each sales order's amount equal the sum of its lines?"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

# The table the foreign key points to must be in the metadata of every process that writes
# these rows; a worker imports only its task modules, not erp.models.
from erp.accounts import models as accounts_models  # noqa: F401
from erp.core.db import Base

STATES = ("queued", "running", "done")


class OrderAuditDB(Base):
    __tablename__ = "order_audits"
    __table_args__ = (CheckConstraint(f"state IN {STATES}", name="state_known"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    orders_checked: Mapped[int] = mapped_column(Integer, default=0)
    mismatches: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
