"""Faults in the middle of an import, with a real prefork worker: its process SIGKILLed (the
task is delivered again: late acks, re-queued when its worker is lost) or its database
connection cut (the task retries with backoff). Either way the import finishes with no
duplicate order or line and nothing lost.

A real worker process, not the in-process test worker: a retried task comes back with a
countdown, and the in-process worker (celery.contrib.testing) was seen to receive it and never
run it when another in-process worker had run earlier in the same pytest process.
"""

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


def test_a_lost_database_connection_mid_import_is_retried_and_resumes_without_duplicates(
    api_client, prefork_worker, clean_tables, make_user, sync_engine
):
    celery_app.backend.client.flushdb()
    member = make_user(role="member", organization="Acme")
    rows = list(sales_csv.good_rows(30_000, seed=5, prefix="CUT"))
    good = sales_csv.expected(rows)
    accepted = upload(api_client, member, sales_csv.csv_bytes(rows)).json()
    import_id = accepted["import_id"]

    def progress() -> int:
        with sync_engine.connect() as connection:
            return connection.execute(
                text("SELECT resume_after_line FROM data_imports WHERE id = :id"), {"id": import_id}
            ).scalar_one()

    wait_for(lambda: progress() > 0, timeout=60, interval=0.01)
    with sync_engine.connect() as connection:
        # The worker's connection is cut as a PostgreSQL restart or a network cut would.
        cut = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'erp-worker' AND datname = current_database()"
            )
        ).scalar_one()
    assert cut >= 1
    assert progress() < 30_001, "the import had not finished when its connection was cut"
    result = finished_import(api_client, member, accepted, timeout=120)
    assert result["status"] == "done" and result["attempts"] == 2, result
    assert (result["rows_read"], result["rows_imported"], result["rows_failed"]) == (30_000, 30_000, 0)
    assert database_figures(sync_engine, member.organization_id) == (good.orders, good.lines, good.amount_by_currency)
