"""Sales reports through the API and a real worker: figures equal an aggregate computed here in
Python over the rows inserted, for every grouping and both formats; who may ask and download;
bad parameters fail at once."""

from __future__ import annotations

import csv
import io
import random
import time
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlalchemy import text

from erp.core import task_owners
from erp.core.celery_app import celery_app
from erp.features.reports.exceptions import InvalidReportParameters
from erp.features.reports.tasks import generate_sales_report
from tests.support.task_status import finished_task

CURRENCIES = ("EUR", "USD", "JPY")


@pytest.fixture
def sales(clean_tables, make_user, sync_engine):
    """Orders of two organizations over 2025-2026, inserted directly; the member's are returned."""
    celery_app.backend.client.flushdb()
    member = make_user(role="member", organization="Acme")
    outsider = make_user(role="member", organization="Globex")
    rng = random.Random(42)
    orders = []
    with sync_engine.begin() as connection:
        for organization_id, count in ((member.organization_id, 3_000), (outsider.organization_id, 500)):
            rows = [
                {
                    "o": organization_id,
                    "n": f"R-{organization_id}-{i}",
                    "d": date(2025, 11, 1) + timedelta(days=rng.randrange(500)),
                    "c": f"Customer {rng.randrange(30)}",
                    "cur": rng.choice(CURRENCIES),
                    "a": Decimal(rng.randint(0, 5_000_000)) / 100,
                }
                for i in range(count)
            ]
            connection.execute(
                text(
                    "INSERT INTO sales_orders (organization_id, order_number, order_date, customer, currency, amount)"
                    " VALUES (:o, :n, :d, :c, :cur, :a)"
                ),
                rows,
            )
            if organization_id == member.organization_id:
                orders = rows
    return member, outsider, orders


def python_aggregate(orders, group_by: str, date_from: date, date_to: date) -> list[list[str]]:
    """The report's rows, computed independently of the database."""

    def key(order) -> str:
        day = order["d"]
        if group_by == "customer":
            return order["c"]
        if group_by == "day":
            return day.isoformat()
        if group_by == "week":
            year, week, _ = day.isocalendar()
            return f"{year}-W{week:02d}"
        return f"{day.year}-{day.month:02d}"

    def sort_key(order) -> object:
        # Periods sort by their start date; customers by name.
        if group_by == "customer":
            return order["c"]
        if group_by == "week":
            return order["d"] - timedelta(days=order["d"].weekday())
        if group_by == "month":
            return order["d"].replace(day=1)
        return order["d"]

    groups: dict[tuple, list] = defaultdict(lambda: [None, 0, Decimal(0)])
    for order in orders:
        if date_from <= order["d"] <= date_to:
            entry = groups[(sort_key(order), order["cur"])]
            entry[0] = key(order)
            entry[1] += 1
            entry[2] += order["a"]
    return [
        [label, currency, str(count), f"{amount:.2f}"]
        for (_, currency), (label, count, amount) in sorted(groups.items())
    ]


def run_report(api_client, user, organization_id: int, body: dict) -> dict:
    accepted = api_client.post(
        f"/api/v1/organizations/{organization_id}/reports/sales", json=body, headers=user.headers
    )
    assert accepted.status_code == 202, accepted.text
    status = finished_task(api_client, user.headers, accepted.json()["status_url"])
    assert status["state"] == "SUCCESS", status
    return status["result"]


@pytest.mark.parametrize("group_by", ["day", "week", "month", "customer"])
def test_csv_report_figures_equal_an_independent_aggregate(api_client, in_process_worker, sales, group_by):
    member, _, orders = sales
    date_from, date_to = date(2026, 1, 1), date(2026, 12, 31)
    result = run_report(
        api_client,
        member,
        member.organization_id,
        {"date_from": str(date_from), "date_to": str(date_to), "group_by": group_by, "format": "csv"},
    )
    download = api_client.get(result["download_url"], headers=member.headers)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert f"by-{group_by}.csv" in download.headers["content-disposition"]
    assert int(download.headers["content-length"]) == result["size_bytes"] == len(download.content)
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0] == ["customer" if group_by == "customer" else "period", "currency", "orders", "amount"]
    assert rows[1:] == python_aggregate(orders, group_by, date_from, date_to)
    assert result["rows"] == len(rows) - 1
    # Currencies are never added together: every group has one row per currency it sold in.
    assert len({(row[0], row[1]) for row in rows[1:]}) == len(rows) - 1


def test_xlsx_report_has_the_rows_and_totals_per_currency(api_client, in_process_worker, sales):
    member, _, orders = sales
    date_from, date_to = date(2025, 11, 1), date(2026, 6, 30)
    result = run_report(
        api_client,
        member,
        member.organization_id,
        {"date_from": str(date_from), "date_to": str(date_to), "group_by": "month", "format": "xlsx"},
    )
    download = api_client.get(result["download_url"], headers=member.headers)
    assert download.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    workbook = load_workbook(io.BytesIO(download.content), read_only=True)
    sheet_rows = list(workbook["Sales"].iter_rows(values_only=True))
    assert sheet_rows[0] == ("period", "currency", "orders", "amount")
    expected = python_aggregate(orders, "month", date_from, date_to)
    assert [
        [period, currency, str(count), f"{Decimal(str(amount)):.2f}"]
        for period, currency, count, amount in sheet_rows[1:]
    ] == expected
    totals = {
        currency: (orders_, amount)
        for currency, orders_, amount in list(workbook["Totals by currency"].iter_rows(values_only=True))[1:]
    }
    in_range = [order for order in orders if date_from <= order["d"] <= date_to]
    for currency in CURRENCIES:
        mine = [order for order in in_range if order["cur"] == currency]
        assert totals[currency][0] == len(mine)
        assert f"{Decimal(str(totals[currency][1])):.2f}" == f"{sum(order['a'] for order in mine):.2f}"


def test_a_member_of_another_organization_gets_403_before_anything_is_queued(api_client, in_process_worker, sales):
    member, outsider, _ = sales
    body = {"date_from": "2026-01-01", "date_to": "2026-01-31"}
    refused = api_client.post(
        f"/api/v1/organizations/{member.organization_id}/reports/sales", json=body, headers=outsider.headers
    )
    assert refused.status_code == 403
    assert f"not a member of organization {member.organization_id}" in refused.json()["error"]["message"]
    assert api_client.portal.call(task_owners.recent_task_ids, outsider.user_id, 10) == []

    result = run_report(api_client, member, member.organization_id, body)
    assert api_client.get(result["download_url"], headers=outsider.headers).status_code == 403
    # Through their own organization's path the file is not theirs either.
    other_path = result["download_url"].replace(
        f"/organizations/{member.organization_id}/", f"/organizations/{outsider.organization_id}/"
    )
    assert api_client.get(other_path, headers=outsider.headers).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"date_from": "2026-02-01", "date_to": "2026-01-01"}, "date_from 2026-02-01 is after date_to 2026-01-01"),
        ({"date_from": "2026-01-01", "date_to": "2026-01-31", "group_by": "year"}, "group_by"),
        ({"date_from": "2026-01-01", "date_to": "2026-01-31", "format": "pdf"}, "format"),
        ({"date_from": "2020-01-01", "date_to": "2026-01-31"}, "more than 366 (REPORT_MAX_RANGE_DAYS)"),
    ],
)
def test_bad_parameters_are_a_422_naming_the_field(api_client, sales, body, message):
    member, _, _ = sales
    response = api_client.post(
        f"/api/v1/organizations/{member.organization_id}/reports/sales", json=body, headers=member.headers
    )
    assert response.status_code == 422 and message in response.json()["error"]["message"]


def test_a_task_given_bad_parameters_fails_at_once_without_retrying(in_process_worker, sales):
    member, _, _ = sales
    started = time.monotonic()
    result = generate_sales_report.delay(member.organization_id, {"date_from": "2026-13-01", "date_to": "2026-01-31"})
    with pytest.raises(InvalidReportParameters, match=r"invalid sales report parameters: date_from: .*"):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    assert time.monotonic() - started < 5, "not retried with backoff"
    assert celery_app.backend.get_task_meta(result.id).get("retries") in (0, None)
