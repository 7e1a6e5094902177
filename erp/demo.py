"""`python -m erp.demo`: demo data for scripts/dev, and how to try it.

Makes admin@example.com a superuser and admin of the "Demo" organization, gives it a fresh
token (older demo tokens are revoked: a token's secret cannot be shown twice), adds an
example schedule that pings every 30 seconds, and gives the organization a year of sales
(the 365 days up to today, made from a fixed random seed, so every run makes the same shape of
data; added once). It prints curl lines to try a report and the import of
samples/sales_orders.csv (which has a few bad rows on purpose), the console's URL with a
one-time login link, and the command line to try.
"""

from __future__ import annotations

import os
import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.accounts import service as accounts
from erp.accounts.models import OrganizationDB
from erp.core.caller import Caller
from erp.core.config import get_settings
from erp.core.db import run_with_session
from erp.sales.models import SalesOrderDB, SalesOrderLineDB
from erp.tasks.api import periodic_tasks
from erp.tasks.api.periodic_tasks_schemas import IntervalIn, PeriodicTaskCreate
from erp.tasks.scheduler_models import PeriodicTaskDB

DEMO_EMAIL = "admin@example.com"
DEMO_ORGANIZATION = "Demo"
DEMO_TOKEN_NAME = "scripts/dev demo"
DEMO_SCHEDULE = "demo: ping every 30 seconds"
DEMO_ORDER_PREFIX = "DEMO-"
SALES_SEED = 2026
SAMPLE_CSV = "samples/sales_orders.csv"

# Customers buy in their own currency; prices are per unit in EUR, converted at a fixed rate.
CUSTOMERS = [
    ("Nordwind Handel GmbH", "EUR"),
    ("Baltic Supplies Oy", "EUR"),
    ("Café Lumière SARL", "EUR"),
    ("Ferreteria Sol SL", "EUR"),
    ("Van Dijk Bouw BV", "EUR"),
    ("Alpen Werkzeug AG", "EUR"),
    ("Harbor & Pine LLC", "USD"),
    ("Great Lakes Fasteners Inc.", "USD"),
    ("Desert Forge Co.", "USD"),
    ("Maple Ridge Builders", "USD"),
    ("Thames Tooling Ltd", "GBP"),
    ("Highland Fixings Ltd", "GBP"),
]
RATES = {"EUR": Decimal("1"), "USD": Decimal("1.08"), "GBP": Decimal("0.85")}
PRODUCTS = [
    ("Hex bolt M8 (100)", Decimal("12.40")),
    ("Washer M8 (500)", Decimal("6.90")),
    ("Cordless drill 18V", Decimal("149.00")),
    ("Safety gloves (pair)", Decimal("4.75")),
    ("Steel shelf 180cm", Decimal("89.50")),
    ("Cable ties (1000)", Decimal("11.20")),
    ("LED work light", Decimal("39.99")),
    ("Wood screws 4x40 (200)", Decimal("8.30")),
    ("Angle grinder 125mm", Decimal("79.00")),
    ("Tape measure 5m", Decimal("9.90")),
]


async def create_demo(session: AsyncSession) -> str:
    actor = accounts.COMMAND_LINE
    user = await accounts.ensure_superuser(DEMO_EMAIL, "Demo Admin", DEMO_ORGANIZATION, actor=actor, session=session)
    await accounts.revoke_tokens_named(user.id, DEMO_TOKEN_NAME, actor=actor, session=session)
    _, secret = await accounts.create_token(user.id, DEMO_TOKEN_NAME, None, actor=actor, session=session)
    if await session.scalar(select(PeriodicTaskDB.id).where(PeriodicTaskDB.name == DEMO_SCHEDULE)) is None:
        await periodic_tasks.create_periodic_task(
            PeriodicTaskCreate(name=DEMO_SCHEDULE, task="erp.ping", schedule=IntervalIn(kind="interval", every=30)),
            Caller(user_id=user.id, email=user.email, is_superuser=True, organization_id=None, role=None),
            session=session,
        )
    return secret


def demo_sales(first_day: date, days: int) -> tuple[list[dict[str, Any]], list[list[tuple[str, int, Decimal]]]]:
    """A year of orders and their lines: more on weekdays, a December peak, 1-5 lines each."""
    rng = random.Random(SALES_SEED)
    orders: list[dict[str, Any]] = []
    lines: list[list[tuple[str, int, Decimal]]] = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        busy = (1.0 if day.weekday() < 5 else 0.3) * (1.6 if day.month == 12 else 1.0)
        for _ in range(rng.randint(int(25 * busy), int(45 * busy))):
            customer, currency = rng.choice(CUSTOMERS)
            order_lines = [
                (product, rng.randint(1, 20), (price * RATES[currency]).quantize(Decimal("0.01")))
                for product, price in rng.sample(PRODUCTS, rng.randint(1, 5))
            ]
            orders.append(
                {
                    "order_number": f"{DEMO_ORDER_PREFIX}{len(orders) + 1:06d}",
                    "order_date": day,
                    "customer": customer,
                    "currency": currency,
                    "amount": sum((quantity * price for _, quantity, price in order_lines), Decimal(0)),
                }
            )
            lines.append(order_lines)
    return orders, lines


async def create_demo_sales(organization_id: int, first_day: date, days: int, *, session: AsyncSession) -> int:
    """Insert the demo year once (bulk inserts); how many orders were added."""
    exists = await session.scalar(
        select(SalesOrderDB.id).where(
            SalesOrderDB.organization_id == organization_id, SalesOrderDB.order_number.startswith(DEMO_ORDER_PREFIX)
        )
    )
    if exists is not None:
        return 0
    orders, lines = demo_sales(first_day, days)
    ids = {}
    for start in range(0, len(orders), 5000):
        batch = [{**order, "organization_id": organization_id} for order in orders[start : start + 5000]]
        result = await session.execute(
            insert(SalesOrderDB).returning(SalesOrderDB.id, SalesOrderDB.order_number, sort_by_parameter_order=True),
            batch,
        )
        ids.update({row.order_number: row.id for row in result})
    line_rows = [
        {
            "order_id": ids[order["order_number"]],
            "position": position,
            "product": product,
            "quantity": quantity,
            "unit_price": price,
        }
        for order, order_lines in zip(orders, lines, strict=True)
        for position, (product, quantity, price) in enumerate(order_lines, start=1)
    ]
    for start in range(0, len(line_rows), 10000):
        await session.execute(insert(SalesOrderLineDB), line_rows[start : start + 10000])
    await session.commit()
    return len(orders)


async def create_demo_with_sales(session: AsyncSession) -> tuple[str, int, int, date, date]:
    secret = await create_demo(session)
    organization_id = await session.scalar(select(OrganizationDB.id).where(OrganizationDB.name == DEMO_ORGANIZATION))
    assert organization_id is not None
    last_day = date.today()
    first_day = last_day - timedelta(days=364)
    added = await create_demo_sales(organization_id, first_day, 365, session=session)
    return secret, organization_id, added, first_day, last_day


async def demo_login_link(base: str, session: AsyncSession) -> str:
    """A one-time link that signs the demo user in to the console (valid for minutes)."""
    user = await accounts.get_user_by_email(DEMO_EMAIL, session=session)
    return accounts.login_link_url(await accounts.create_login_link(user.id, session=session), base)


def main() -> None:
    secret, organization_id, added, first_day, last_day = run_with_session(create_demo_with_sales)
    base = f"http://localhost:{os.environ.get('PORT', '5000')}"
    login_link = run_with_session(lambda session: demo_login_link(base, session))
    minutes = get_settings().LOGIN_LINK_LIFETIME_MINUTES
    auth = '-H "Authorization: Bearer $ERP_TOKEN"'
    organization = f"{base}/api/v1/organizations/{organization_id}"
    sales = f"added {added:,} demo orders" if added else "its demo orders were added before"
    print(
        f"""
erp demo: {DEMO_EMAIL} (superuser, admin of "{DEMO_ORGANIZATION}", organization {organization_id}; {sales})
has this API token, shown once:

    export ERP_TOKEN={secret}

Try it once `honcho` is up:
    curl -s -X POST {auth} {base}/api/v1/tasks/ping
    curl -s {auth} {base}/api/v1/tasks/<task_id>
    curl -s {auth} {base}/api/v1/admin/periodic-tasks
    curl -s {auth} {base}/api/v1/admin/health-checks

A sales report of the demo year, by month, as XLSX: start it, watch its progress, download it:
    curl -s -X POST {auth} -H "Content-Type: application/json" \\
         -d '{{"date_from": "{first_day}", "date_to": "{last_day}", "group_by": "month", "format": "xlsx"}}' \\
         {organization}/reports/sales
    curl -s {auth} {base}/api/v1/tasks/<task_id>          # PROGRESS, then SUCCESS with result.download_url
    curl -s -OJ {auth} {base}<download_url>

Import the sample CSV (it has 4 bad rows on purpose) and read its errors:
    curl -s {auth} -H "Content-Type: text/csv" --data-binary @{SAMPLE_CSV} \\
         "{organization}/imports/sales-orders?filename=sales_orders.csv"
    curl -s {auth} {organization}/imports/<import_id>
    curl -s {auth} {organization}/imports/<import_id>/errors.csv

    open {base}/docs

The operator console, {base}/console (sign in with the token above), or at once, within
{minutes} minutes, with this one-time link:
    {login_link}

The command line over the same services: .venv/bin/python -m erp --help, e.g.
    .venv/bin/python -m erp schedules list
    .venv/bin/python -m erp doctor
"""
    )


if __name__ == "__main__":
    main()
