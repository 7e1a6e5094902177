"""Sales orders and their lines, per organization.

An order is identified by its organization and `order_number` (the number the selling
system gave it): that natural key is what makes an import idempotent. Its `amount` is the sum
of its lines, in its `currency`: amounts in different currencies are never added together.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

# The tables the foreign keys point to must be in the metadata of every process that writes
# these rows; a worker imports only its task modules, not erp.models.
from erp.accounts import models as accounts_models  # noqa: F401
from erp.core.db import Base

# Money: 12 digits before the point is beyond any single order; cents are kept exactly.
AMOUNT = Numeric(14, 2)


class SalesOrderDB(Base):
    __tablename__ = "sales_orders"
    __table_args__ = (
        UniqueConstraint("organization_id", "order_number"),
        # Reports filter by organization and date range.
        Index("ix_sales_orders_organization_id_order_date", "organization_id", "order_date"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_code"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    order_number: Mapped[str] = mapped_column(String(64))
    order_date: Mapped[date] = mapped_column(Date)
    customer: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(AMOUNT)
    # The data import that created the order (None for orders entered otherwise). A plain
    # number, not a foreign key: sales data does not depend on the import feature.
    import_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SalesOrderLineDB(Base):
    __tablename__ = "sales_order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
    )

    order_id: Mapped[int] = mapped_column(ForeignKey("sales_orders.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1, 2, ... within the order
    product: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal] = mapped_column(AMOUNT)
