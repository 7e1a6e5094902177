"""The API's limits on the console's members' forms, through the real app, PostgreSQL and Redis,
and no worker (so what is queued stays queued, and every slot taken stays taken): a form past
a limit is the API's 429, with its Retry-After, said at the form, and stores nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from erp.core.celery_app import celery_app
from tests.integration.test_console_members import SAMPLE, api_task_count, sign_in, upload
from tests.support.scheduling import empty_broker


@pytest.fixture
def client(api_client, clean_tables):
    api_client.cookies.clear()
    yield api_client
    api_client.cookies.clear()


def test_the_apis_limits_refuse_a_form_with_the_apis_429_and_store_nothing(client, make_user, limits, sync_engine):
    """No worker: what is queued stays queued, so the one slot taken stays taken."""
    empty_broker()
    celery_app.backend.client.flushdb()  # no running counts of an earlier test's organization 1
    acme = make_user(role="member", organization="Acme")
    limits(REPORT_MAX_RUNNING_PER_ORGANIZATION=1, DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION=1)
    member = sign_in(client, acme)
    url = f"/console/work/{acme.organization_id}"
    report = {"csrf": member.csrf, "date_from": "2026-11-01", "date_to": "2026-11-30"}
    assert client.post(f"{url}/reports", data=report, follow_redirects=False).status_code == 303
    refused = client.post(f"{url}/reports", data=report)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "Not requested:" in refused.text and "REPORT_MAX_RUNNING_PER_ORGANIZATION" in refused.text
    assert upload(client, member, SAMPLE.read_bytes()).status_code == 303
    refused = upload(client, member, SAMPLE.read_bytes())
    assert refused.status_code == 429 and "DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION" in refused.text
    assert 'id="upload-error"' in refused.text
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one() == 1
    assert api_task_count(client, acme) == 2
    empty_broker()


def test_an_upload_over_the_size_limit_is_the_apis_413_and_stores_nothing(client, make_user, limits, sync_engine):
    member = make_user(role="member", organization="Acme")
    limits(DATA_IMPORT_MAX_UPLOAD_BYTES=2048)
    refused = upload(client, sign_in(client, member), SAMPLE.read_bytes())  # 3,362 bytes
    assert refused.status_code == 413
    assert "Not uploaded: the upload is larger than 2,048 bytes (DATA_IMPORT_MAX_UPLOAD_BYTES)" in refused.text
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM files")).scalar_one() == 0
