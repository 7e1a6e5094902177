"""What a real worker gives back: a report's or import's slot when the task ends, an import's
upload (and so its share of the storage quota) when the import is over."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import text

from erp.core import concurrency_slots
from erp.core.celery_app import celery_app
from erp.core.files import file_store
from erp.features.data_processing import import_pipeline
from erp.features.data_processing.models import DataImportDB
from tests.support import sales_csv
from tests.support.scheduling import wait_for
from tests.support.task_status import finished_task


@pytest.fixture
def member(clean_tables, make_user):
    celery_app.backend.client.flushdb()
    return make_user(role="member", organization="Acme")


def slots_held(kind: str, organization_id: int) -> int:
    key = concurrency_slots.SLOT_KEY.format(kind=kind, holder=f"organization:{organization_id}")
    return celery_app.backend.client.zcard(key)


def files_stored(sync_engine) -> int:
    with sync_engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM files")).scalar_one()


def test_a_finished_report_gives_its_slot_back(api_client, in_process_worker, member, limits):
    limits(REPORT_MAX_RUNNING_PER_ORGANIZATION=1)
    url = f"/api/v1/organizations/{member.organization_id}/reports/sales"
    body = {"date_from": "2026-01-01", "date_to": "2026-01-31"}
    for _ in range(3):  # one at a time, each after the one before has finished
        accepted = api_client.post(url, json=body, headers=member.headers)
        assert accepted.status_code == 202, accepted.text
        assert finished_task(api_client, member.headers, accepted.json()["status_url"])["state"] == "SUCCESS"
        # The slot is given back in task_postrun, just after the result (SUCCESS) is stored.
        wait_for(lambda: slots_held("report", member.organization_id) == 0, timeout=5, message="slot given back")


def test_a_done_import_deletes_its_upload_keeps_its_errors_and_frees_the_quota(
    api_client, in_process_worker, member, limits, sync_engine
):
    rows = list(sales_csv.good_rows(50))
    rows.insert(10, ["BAD-1", "2026-02-30", "Customer 01", "EUR", "Product 1", "1", "9.99"])
    body = sales_csv.csv_bytes(rows)
    limits(STORAGE_QUOTA_BYTES_PER_ORGANIZATION=int(len(body) * 1.5), DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION=1)
    url = f"/api/v1/organizations/{member.organization_id}/imports/sales-orders"
    headers = {**member.headers, "Content-Type": "text/csv"}
    for _ in range(2):  # the second fits in the quota only because the first's file is gone
        accepted = api_client.post(url, content=body, headers=headers)
        assert accepted.status_code == 202, accepted.text
        status = finished_task(api_client, member.headers, accepted.json()["status_url"])
        assert status["state"] == "SUCCESS", status
        assert files_stored(sync_engine) == 0, "the upload is deleted once its import is done"
        assert slots_held("import", member.organization_id) == 0
        data_import = api_client.get(accepted.json()["import_url"], headers=member.headers).json()
        assert data_import["status"] == "done" and data_import["rows_failed"] == 1
        errors = api_client.get(data_import["errors_url"], headers=member.headers)
        assert errors.status_code == 200
        assert [row[0] for row in csv.reader(io.StringIO(errors.text))] == ["line_number", "12"]


@pytest.mark.anyio
async def test_an_import_that_fails_for_good_deletes_its_upload(erp_session, member):
    async def chunks():
        yield b"order_number,order_date,customer,currency,product,quantity,unit_price\r\n"

    stored = await file_store(erp_session).save(
        chunks(), name="x.csv", content_type="text/csv", purpose="upload", organization_id=member.organization_id
    )
    data_import = DataImportDB(
        organization_id=member.organization_id,
        kind="sales_orders",
        file_id=stored.id,
        filename="x.csv",
        size_bytes=stored.size_bytes,
        status="running",
    )
    erp_session.add(data_import)
    await erp_session.flush()
    await import_pipeline.record_failure(data_import.id, "OperationalError: gone", session=erp_session)
    await erp_session.refresh(data_import)
    assert data_import.status == "failed" and data_import.error == "OperationalError: gone"
    assert data_import.file_id is None
    assert await file_store(erp_session).stored_bytes(member.organization_id) == 0
