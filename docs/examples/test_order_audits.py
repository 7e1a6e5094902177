# tests/integration/test_order_audits.py
"""Order audits, with the test kit: the service on a rolled-back session, the task eagerly and
on a real worker, the endpoint through the API."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from erp.accounts.models import OrganizationDB
from erp.features.order_audits import service
from erp.features.order_audits.models import OrderAuditDB
from erp.features.order_audits.tasks import run_order_audit
from erp.sales.models import SalesOrderDB, SalesOrderLineDB
from erp.testing.waiting import finished_task

# Order number, amount, lines (quantity, unit price): A-2's amount is not its lines' sum.
ORDERS = [("A-1", "30.00", [(1, "10.00"), (2, "10.00")]), ("A-2", "99.00", [(3, "5.00")]), ("A-3", "0.00", [])]


def order_rows(organization_id: int) -> list[SalesOrderDB]:
    return [
        SalesOrderDB(
            organization_id=organization_id,
            order_number=number,
            order_date=date(2031, 1, 15),
            customer="Acme",
            currency="EUR",
            amount=Decimal(amount),
        )
        for number, amount, _ in ORDERS
    ]


def line_rows(flushed_orders: list[SalesOrderDB]) -> list[SalesOrderLineDB]:
    return [
        SalesOrderLineDB(
            order_id=order.id, position=position, product="bolt", quantity=quantity, unit_price=Decimal(price)
        )
        for order, (_, _, lines) in zip(flushed_orders, ORDERS, strict=True)
        for position, (quantity, price) in enumerate(lines, 1)
    ]


@pytest.mark.anyio
async def test_the_service_finds_the_order_whose_amount_is_not_its_lines_sum(erp_session, monkeypatch):
    monkeypatch.setattr(service, "BATCH_ORDERS", 2)
    organization = OrganizationDB(name="Audited")
    erp_session.add(organization)
    await erp_session.flush()
    rows = order_rows(organization.id)
    erp_session.add_all(rows)
    await erp_session.flush()
    erp_session.add_all(line_rows(rows))
    audit = await service.start_audit(organization.id, session=erp_session)
    reported: list[dict] = []

    result = await service.run_audit(audit.id, session=erp_session, progress=reported.append)

    assert result == {"audit_id": audit.id, "orders_checked": 3, "mismatches": 1, "mismatched_orders": ["A-2"]}
    assert reported == [{"orders_checked": 2, "orders_total": 3}, {"orders_checked": 3, "orders_total": 3}]
    assert (audit.state, audit.orders_checked, audit.mismatches) == ("done", 3, 1)


def test_an_unknown_audit_fails_at_once_without_retries(erp_eager):
    result = run_order_audit.delay(2**62)
    assert result.state == "FAILURE"
    assert isinstance(result.result, service.UnknownAudit)


def add_orders(erp_sync_engine, organization_id: int) -> None:
    with Session(erp_sync_engine) as session, session.begin():
        rows = order_rows(organization_id)
        session.add_all(rows)
        session.flush()
        session.add_all(line_rows(rows))


def test_the_endpoint_answers_with_the_task_whose_status_has_the_result(
    erp_eager, erp_api, erp_make_user, erp_sync_engine, erp_clock
):
    erp_clock.set(datetime(2031, 2, 1, 8, 0, tzinfo=UTC))
    member = erp_make_user()
    add_orders(erp_sync_engine, member.organization_id)

    accepted = erp_api.post(f"/api/v1/organizations/{member.organization_id}/order-audits", headers=member.headers)

    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    status = erp_api.get(body["status_url"], headers=member.headers).json()
    assert status["state"] == "SUCCESS", status
    assert status["result"]["mismatched_orders"] == ["A-2"]
    with Session(erp_sync_engine) as session:
        audit = session.scalars(select(OrderAuditDB).where(OrderAuditDB.id == body["audit_id"])).one()
    assert (audit.state, audit.finished_at) == ("done", erp_clock.now())


def test_a_real_worker_runs_it_too(erp_worker, erp_api, erp_make_user, erp_sync_engine):
    member = erp_make_user()
    add_orders(erp_sync_engine, member.organization_id)
    accepted = erp_api.post(f"/api/v1/organizations/{member.organization_id}/order-audits", headers=member.headers)
    status = finished_task(erp_api, member.headers, accepted.json()["status_url"], timeout=30)
    assert status["state"] == "SUCCESS", status
    assert status["result"]["orders_checked"] == 3


def test_only_members_of_the_organization_may_start_one(erp_api, erp_make_user):
    member, stranger = erp_make_user(), erp_make_user()
    refused = erp_api.post(f"/api/v1/organizations/{member.organization_id}/order-audits", headers=stranger.headers)
    assert refused.status_code == 403
