"""A real prefork worker SIGKILLed in the middle of an import: the task is delivered again
(late acks, re-queued when its worker is lost) and finishes with no duplicate order or line."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import text

from erp.core.celery_app import celery_app
from tests.integration.test_data_imports import database_figures, finished_import, upload
from tests.support import sales_csv
from tests.support.processes import start_worker
from tests.support.scheduling import empty_broker, wait_for


@pytest.fixture
def prefork_worker(migrated_database, redis_clean):
    empty_broker()
    # Small chunks make a long import of many commits: there is a middle to kill it in.
    worker = start_worker("--concurrency", "1", name="import-worker", env={"DATA_IMPORT_CHUNK_ROWS": "200"})
    yield worker
    worker.stop()


def worker_children(worker) -> list[int]:
    pid = worker.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_worker_killed_mid_import_is_redelivered_and_finishes_without_duplicates(
    api_client, prefork_worker, clean_tables, make_user, sync_engine
):
    celery_app.backend.client.flushdb()
    member = make_user(role="member", organization="Acme")
    rows = list(sales_csv.good_rows(40_000, seed=9, prefix="KILL"))
    good = sales_csv.expected(rows)
    accepted = upload(api_client, member, sales_csv.csv_bytes(rows)).json()

    def resume_line() -> int:
        with sync_engine.connect() as connection:
            return connection.execute(
                text("SELECT resume_after_line FROM data_imports WHERE id = :id"), {"id": accepted["import_id"]}
            ).scalar_one()

    wait_for(lambda: resume_line() > 2_000, timeout=60, interval=0.01)
    [child] = worker_children(prefork_worker)
    os.kill(child, signal.SIGKILL)  # mid-import: some chunks committed, more to come
    killed_at = resume_line()
    assert 0 < killed_at < 40_001, "the import must be killed in its middle"

    result = finished_import(api_client, member, accepted, timeout=120)
    assert result["status"] == "done" and result["attempts"] == 2, result
    assert worker_children(prefork_worker) != [child], "a new child ran the redelivered task"
    assert (result["rows_read"], result["rows_imported"], result["rows_skipped"], result["rows_failed"]) == (
        40_000,
        40_000,
        0,
        0,
    )
    assert database_figures(sync_engine, member.organization_id) == (good.orders, good.lines, good.amount_by_currency)
    assert "resumes after line" in prefork_worker.output()
