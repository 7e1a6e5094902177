"""Limits on what one user and one organization may queue and store, through the real app, the
real PostgreSQL and Redis, and no worker: what is queued stays queued, so every slot taken
stays taken (tests/integration/test_quotas_worker.py has a worker give them back)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from erp.core.celery_app import celery_app
from tests.support import sales_csv
from tests.support.scheduling import empty_broker


@pytest.fixture
def members(clean_tables, make_user):
    celery_app.backend.client.flushdb()  # the limits' state lives beside the results
    empty_broker()
    first = make_user(role="member", organization="Acme")
    second = make_user(role="member", organization="Acme")
    outsider = make_user(role="member", organization="Globex")
    yield first, second, outsider
    empty_broker()


def ping(api_client, user):
    return api_client.post("/api/v1/tasks/ping", headers=user.headers)


def report(api_client, user, date_from="2026-01-01", date_to="2026-03-31"):
    return api_client.post(
        f"/api/v1/organizations/{user.organization_id}/reports/sales",
        json={"date_from": date_from, "date_to": date_to},
        headers=user.headers,
    )


def upload(api_client, user, body: bytes, *, chunked: bool = False):
    content = iter([body[i : i + 1000] for i in range(0, len(body), 1000)]) if chunked else body
    return api_client.post(
        f"/api/v1/organizations/{user.organization_id}/imports/sales-orders",
        content=content,
        headers={**user.headers, "Content-Type": "text/csv"},
    )


def stored(sync_engine) -> tuple[int, int]:
    with sync_engine.connect() as connection:
        files = connection.execute(text("SELECT count(*) FROM files")).scalar_one()
        imports = connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one()
    return files, imports


def test_a_member_flooding_pings_is_refused_past_its_rate_with_retry_after(api_client, members, limits):
    limits(TASKS_PER_MINUTE_PER_USER=20, TASKS_PER_MINUTE_PER_ORGANIZATION=1000)
    member, _, _ = members
    answers = [ping(api_client, member) for _ in range(60)]
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(202) == 20 and statuses[:20] == [202] * 20, statuses
    assert set(statuses[20:]) == {429}
    refused = answers[20]
    # One more every 60/20 = 3 s: Retry-After says so.
    assert 1 <= int(refused.headers["Retry-After"]) <= 3
    message = refused.json()["error"]["message"]
    assert "TASKS_PER_MINUTE_PER_USER" in message and "20 tasks within a minute" in message


def test_an_organization_s_members_share_its_rate_and_another_organization_is_not_slowed(api_client, members, limits):
    limits(TASKS_PER_MINUTE_PER_USER=1000, TASKS_PER_MINUTE_PER_ORGANIZATION=10)
    first, second, outsider = members
    statuses = [ping(api_client, user).status_code for _ in range(10) for user in (first, second)]
    assert statuses.count(202) == 10 and statuses.count(429) == 10
    refused = ping(api_client, second)
    assert refused.status_code == 429
    assert f"organization {second.organization_id}" in refused.json()["error"]["message"]
    assert "TASKS_PER_MINUTE_PER_ORGANIZATION" in refused.json()["error"]["message"]
    assert ping(api_client, outsider).status_code == 202


def test_reports_queued_or_running_per_organization_are_bounded(api_client, members, limits):
    limits(REPORT_MAX_RUNNING_PER_ORGANIZATION=2)
    first, second, outsider = members
    assert report(api_client, first).status_code == 202
    assert report(api_client, second).status_code == 202
    refused = report(api_client, first)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    message = refused.json()["error"]["message"]
    assert "2 report(s) under way" in message and "REPORT_MAX_RUNNING_PER_ORGANIZATION" in message
    # Another organization's reports are not counted with them; a ping is no report.
    assert report(api_client, outsider).status_code == 202
    assert ping(api_client, first).status_code == 202


def test_imports_queued_or_running_per_organization_are_bounded_before_the_body_is_stored(
    api_client, members, limits, sync_engine
):
    limits(DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION=1)
    member, _, outsider = members
    body = sales_csv.csv_bytes(list(sales_csv.good_rows(20)))
    assert upload(api_client, member, body).status_code == 202
    assert stored(sync_engine) == (1, 1)
    refused = upload(api_client, member, body)
    assert refused.status_code == 429, refused.text
    assert "DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION" in refused.json()["error"]["message"]
    assert stored(sync_engine) == (1, 1), "nothing stored for the refused upload"
    assert upload(api_client, outsider, body).status_code == 202


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
def test_an_upload_past_the_organization_s_storage_quota_is_a_413_naming_it(
    api_client, members, limits, sync_engine, chunked
):
    body = sales_csv.csv_bytes(list(sales_csv.good_rows(60)))
    assert 3000 < len(body) < 5000
    limits(STORAGE_QUOTA_BYTES_PER_ORGANIZATION=int(len(body) * 1.5))
    member, second, outsider = members
    assert upload(api_client, member, body, chunked=chunked).status_code == 202
    refused = upload(api_client, second, body, chunked=chunked)
    assert refused.status_code == 413, refused.text
    message = refused.json()["error"]["message"]
    assert "STORAGE_QUOTA_BYTES_PER_ORGANIZATION" in message and f"organization {member.organization_id}" in message
    assert stored(sync_engine) == (1, 1), "nothing kept of the refused upload"
    # The quota is the organization's: another one's upload is not refused.
    assert upload(api_client, outsider, body, chunked=chunked).status_code == 202


def test_a_report_range_longer_than_the_setting_is_a_422_naming_the_field(api_client, members, limits):
    member, _, _ = members
    too_long = report(api_client, member, "2025-01-01", "2026-01-02")  # 367 days
    assert too_long.status_code == 422, too_long.text
    error = too_long.json()["error"]
    assert "date_to" in error["message"] and "REPORT_MAX_RANGE_DAYS" in error["message"]
    assert error["details"][0]["location"] == "body.date_to"
    assert report(api_client, member, "2025-01-01", "2026-01-01").status_code == 202  # 366 days
    limits(REPORT_MAX_RANGE_DAYS=31)
    assert report(api_client, member, "2026-01-01", "2026-02-01").status_code == 422
