"""The periodic health check: scheduled from configuration by a real beat, run by a real worker,
stored with per-check durations, pruned, and shown to superusers only."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from erp.core.bridge import run_service
from erp.tasks.periodic_health_checks import run_health_checks
from tests.support.processes import start_beat, start_worker
from tests.support.scheduling import empty_broker, wait_for

CHECKS = {"postgresql", "redis", "queues", "beat", "workers"}


def stored_results(sync_engine) -> list:
    with sync_engine.connect() as connection:
        return connection.execute(
            text("SELECT checked_at, healthy, checks FROM health_check_results ORDER BY id")
        ).all()


def add_old_result(sync_engine) -> None:
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO health_check_results (checked_at, healthy, duration_ms, worker, checks)"
                " VALUES (now() - interval '8 days', true, 1, 'old', '{}')"
            )
        )


@pytest.fixture
def worker_and_beat(clean_tables, redis_clean):
    empty_broker()
    env = {"HEALTH_CHECK_INTERVAL_SECONDS": "5"}
    worker = start_worker("--concurrency", "1", name="health-worker", env=env)
    beat = start_beat(name="health-beat", env=env)
    yield worker, beat
    beat.stop()
    worker.stop()


def test_beat_schedules_it_from_configuration_and_every_check_passes(
    worker_and_beat, api_client, make_user, sync_engine
):
    add_old_result(sync_engine)
    results = wait_for(lambda: [row for row in stored_results(sync_engine) if row.checks], timeout=40)
    latest = results[-1]
    assert set(latest.checks) == CHECKS
    assert latest.healthy, latest.checks
    assert all(check["duration_ms"] >= 0 for check in latest.checks.values())
    assert latest.checks["workers"]["workers"], "the worker answered the control ping"
    assert "celery" in latest.checks["queues"]["depths"]
    # The 8-day-old result is gone (HEALTH_CHECK_RETENTION_HOURS is a week by default).
    assert all(row.checks for row in stored_results(sync_engine))
    with sync_engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT p.from_config, i.every, i.period FROM periodic_tasks p JOIN interval_schedules i"
                " ON i.id = p.interval_id WHERE p.name = 'erp.health_check'"
            )
        ).one()
    assert tuple(row) == (True, 5, "seconds"), "the interval comes from HEALTH_CHECK_INTERVAL_SECONDS"

    superuser = make_user(role=None, superuser=True)
    member = make_user(role="member")
    response = api_client.get("/api/v1/admin/health-checks", headers=superuser.headers)
    assert response.status_code == 200
    shown = response.json()["items"][0]
    assert shown["healthy"] is True and set(shown["checks"]) == CHECKS
    assert {name: check["ok"] for name, check in shown["checks"].items()} == dict.fromkeys(CHECKS, True)
    assert api_client.get("/api/v1/admin/health-checks", headers=member.headers).status_code == 403


def test_without_worker_and_beat_those_checks_fail_and_the_result_is_still_stored(
    clean_tables, redis_clean, sync_engine
):
    outcome = run_service(run_health_checks)
    checks = outcome["checks"]
    assert outcome["stored"] and not outcome["healthy"]
    assert checks["postgresql"]["ok"] and checks["redis"]["ok"] and checks["queues"]["ok"]
    assert checks["beat"] == {
        "ok": False,
        "detail": "no beat has ever written a heartbeat",
        "duration_ms": checks["beat"]["duration_ms"],
    }
    assert not checks["workers"]["ok"] and "no worker answered" in checks["workers"]["detail"]
    [stored] = stored_results(sync_engine)
    assert stored.healthy is False and stored.checks == checks
