"""The test kit (erp.testing) as a feature's tests use it, against the real PostgreSQL and Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from erp.core.clock import utcnow
from erp.features.ping.service import ping_database
from erp.testing.database import rolled_back_session
from erp.testing.worker import in_process_worker
from tests.support import bridge_tasks, eager_tasks
from tests.support.bridge_tasks import probe_values
from tests.support.task_status import finished_task


def test_the_in_process_worker_runs_a_task_dispatched_through_the_api(erp_worker, erp_api, erp_make_user):
    user = erp_make_user()
    accepted = erp_api.post("/api/v1/tasks/ping", headers=user.headers)
    assert accepted.status_code == 202, accepted.text
    status = finished_task(erp_api, user.headers, accepted.json()["status_url"], timeout=30)
    assert status["state"] == "SUCCESS", status
    assert status["result"]["pong"] is True


def test_the_eager_app_runs_a_dispatched_task_before_the_answer(erp_eager, erp_api, erp_make_user):
    user = erp_make_user()
    status_url = erp_api.post("/api/v1/tasks/ping", headers=user.headers).json()["status_url"]
    assert erp_api.get(status_url, headers=user.headers).json()["state"] == "SUCCESS"


def test_eager_mode_ends_with_the_test(erp_api):
    from erp.core.celery_app import celery_app

    assert celery_app.conf.task_always_eager is False


@pytest.mark.anyio
async def test_the_session_runs_a_service_as_a_task_would(erp_session):
    result = await ping_database(session=erp_session)
    assert result["pong"] is True


@pytest.mark.anyio
async def test_what_a_rolled_back_session_commits_is_gone_afterwards(probe_table, sync_engine):
    async with rolled_back_session() as session:
        await bridge_tasks.insert_probe("kept only inside", False, session=session)
        await session.commit()  # a service's commit ends a savepoint, not the transaction
        rows = await session.execute(text(f"SELECT value FROM {bridge_tasks.PROBE_TABLE}"))
        assert list(rows.scalars()) == ["kept only inside"]
    assert probe_values(sync_engine) == []


def test_the_clock_moves_what_services_read_in_the_web_process(erp_clock, erp_api, erp_make_user, clean_tables):
    erp_clock.set(datetime(2031, 1, 15, 0, 0, tzinfo=UTC))
    admin = erp_make_user(superuser=True)
    body = {"name": "nightly", "task": "erp.ping", "schedule": {"kind": "crontab", "minute": "30", "hour": "2"}}
    created = erp_api.post("/api/v1/admin/periodic-tasks", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    assert datetime.fromisoformat(created.json()["next_run_at"]) == datetime(2031, 1, 15, 2, 30, tzinfo=UTC)
    assert erp_clock.advance(hours=3) == utcnow() == datetime(2031, 1, 15, 3, 0, tzinfo=UTC)


def test_the_clock_is_the_system_clock_again_after_the_test():
    assert abs(utcnow() - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_second_in_process_worker_runs_countdowns_too(erp_database, probe_table, sync_engine):
    """Celery hands a worker started in a process the event loop of the one before it, whose
    timer has stopped: a countdown, a retry's among them, then never came due."""
    for written in (["first"], ["first", "second"]):
        with in_process_worker():
            result = eager_tasks.record_task.apply_async((written[-1],), countdown=0.1)
            assert result.get(timeout=15) == written
