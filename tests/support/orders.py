"""Sales orders written straight into the table, for tests that read them (reports)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import Engine, text


def insert_orders(
    sync_engine: Engine, organization_id: int, count: int, *, first_day: date, days: int, customers: int
) -> None:
    """`count` EUR orders of the organization, spread over `days` days from `first_day` and
    over `customers` customers ("Customer 0", ...), order i worth i + 0.50."""
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sales_orders (organization_id, order_number, order_date, customer, currency, amount)"
                " VALUES (:o, :n, :d, :c, 'EUR', :a)"
            ),
            [
                {
                    "o": organization_id,
                    "n": f"R-{organization_id}-{i}",
                    "d": first_day + timedelta(days=i % days),
                    "c": f"Customer {i % customers}",
                    "a": Decimal(i) + Decimal("0.50"),
                }
                for i in range(count)
            ],
        )
