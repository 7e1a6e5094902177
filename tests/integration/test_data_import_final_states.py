"""Every import ends in a final state with its reason, with a real prefork worker: one whose task
is revoked before it runs (it used to stay `queued` for ever), and one whose worker keeps dying
under it (it used to be delivered again for ever).
"""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import text

from erp.core.celery_app import celery_app
from tests.integration.test_data_import_worker_killed import worker_children
from tests.integration.test_data_imports import finished_import, upload
from tests.support import sales_csv
from tests.support.processes import start_worker
from tests.support.scheduling import empty_broker, wait_for
from tests.support.task_status import finished_task

MAX_ATTEMPTS = 3
FINAL = ("done", "failed")


@pytest.fixture
def prefork_worker(migrated_database, redis_clean):
    empty_broker()
    worker = start_worker(
        "--concurrency",
        "1",
        name="import-worker",
        env={"DATA_IMPORT_CHUNK_ROWS": "200", "DATA_IMPORT_MAX_ATTEMPTS": str(MAX_ATTEMPTS)},
    )
    yield worker
    worker.stop()


def import_row(sync_engine, import_id: int):
    with sync_engine.connect() as connection:
        return connection.execute(
            text("SELECT status, attempts, error, finished_at FROM data_imports WHERE id = :id"), {"id": import_id}
        ).one()


def final_row(sync_engine, import_id: int):
    found = import_row(sync_engine, import_id)
    return found if found.status in FINAL else None


def test_an_import_revoked_before_it_runs_is_failed_with_the_reason(
    api_client, prefork_worker, clean_tables, make_user, sync_engine
):
    celery_app.backend.client.flushdb()
    member = make_user(role="member", organization="Acme")
    # The only worker process is busy with a long import, so the next one waits in the queue.
    busy = upload(api_client, member, sales_csv.csv_bytes(list(sales_csv.good_rows(20_000, seed=1, prefix="BUSY"))))
    busy = busy.json()
    wait_for(lambda: import_row(sync_engine, busy["import_id"]).status == "running", timeout=30)
    waiting = upload(api_client, member, sales_csv.csv_bytes(list(sales_csv.good_rows(100, seed=2, prefix="RVK"))))
    waiting = waiting.json()
    revoked = api_client.post(f"/api/v1/tasks/{waiting['task_id']}/revoke", headers=member.headers)
    assert revoked.status_code == 202, revoked.text
    assert import_row(sync_engine, waiting["import_id"]).status == "queued"

    finished_import(api_client, member, busy, timeout=120)
    row = wait_for(
        lambda: final_row(sync_engine, waiting["import_id"]), timeout=30, message="the revoked import leaves `queued`"
    )
    assert row.status == "failed" and row.finished_at is not None, row
    assert "revoked before it ran" in row.error and row.attempts == 0, row
    shown = api_client.get(waiting["import_url"], headers=member.headers).json()
    assert shown["status"] == "failed" and "revoked" in shown["error"]
    with sync_engine.connect() as connection:
        assert (
            connection.execute(text("SELECT count(*) FROM sales_orders WHERE order_number LIKE 'RVK%'")).scalar() == 0
        )


def test_an_import_whose_worker_keeps_dying_fails_after_the_most_attempts(
    api_client, prefork_worker, clean_tables, make_user, sync_engine
):
    celery_app.backend.client.flushdb()
    member = make_user(role="member", organization="Acme")
    rows = list(sales_csv.good_rows(40_000, seed=8, prefix="DIE"))
    accepted = upload(api_client, member, sales_csv.csv_bytes(rows)).json()
    import_id = accepted["import_id"]
    kills = 0
    # Each time the import starts, its worker process dies (as an import that runs it out of
    # memory would make it), and the task comes back: late acks, re-queued when a worker is lost.
    while kills < MAX_ATTEMPTS + 2:

        def started_again_or_finished(after: int = kills):
            found = import_row(sync_engine, import_id)
            return found if found.status in FINAL or (found.status == "running" and found.attempts > after) else None

        if wait_for(started_again_or_finished, timeout=60, interval=0.01).status in FINAL:
            break
        [child] = worker_children(prefork_worker)
        os.kill(child, signal.SIGKILL)
        kills += 1
    row = wait_for(lambda: final_row(sync_engine, import_id), timeout=60)
    assert kills == MAX_ATTEMPTS, (kills, row)
    assert row.status == "failed" and row.attempts == MAX_ATTEMPTS and row.finished_at is not None, row
    assert f"started {MAX_ATTEMPTS} times" in row.error, row.error
    status = finished_task(api_client, member.headers, accepted["status_url"], 30)
    assert status["state"] == "FAILURE", status
