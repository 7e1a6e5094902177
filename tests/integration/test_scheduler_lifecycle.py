"""start_time, expires, one-off and clocked tasks through the real scheduler, with a chosen clock.

The scheduler's steps take `now` as an argument, so these tests move time forward by hand
while PostgreSQL and Redis are real.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from erp.tasks.db_scheduler import DatabaseScheduler
from erp.tasks.scheduler_models import ClockedScheduleDB, PeriodicTaskDB
from tests.support.scheduling import add_interval_task, get_task, queued_runs, utcnow


def step(scheduler: DatabaseScheduler, now) -> None:
    """One tick's work at `now`: compute missing next runs, then send what is due."""
    scheduler.schedule_unscheduled(now)
    scheduler.send_due(now)


def test_the_first_run_waits_for_start_time(scheduler, sync_engine):
    now = utcnow().replace(microsecond=0)
    add_interval_task(sync_engine, "starts-later", every=1, period="minutes", start_time=now + timedelta(minutes=10))
    step(scheduler, now)
    step(scheduler, now + timedelta(minutes=9))
    assert queued_runs("starts-later") == []
    step(scheduler, now + timedelta(minutes=10, seconds=1))
    assert [run["scheduled_at"] for run in queued_runs("starts-later")] == [now + timedelta(minutes=10)]


def test_no_run_after_expires_and_the_row_says_why(scheduler, sync_engine):
    now = utcnow().replace(microsecond=0)
    add_interval_task(
        sync_engine, "expiring", every=1, period="minutes", expires=now + timedelta(minutes=2, seconds=30)
    )
    for minute in range(5):
        step(scheduler, now + timedelta(minutes=minute, seconds=1))
    assert len(queued_runs("expiring")) == 3  # at 0, 1 and 2 minutes
    row = get_task(sync_engine, "expiring")
    assert not row.enabled and row.next_run_at is None
    assert row.disabled_reason.startswith("expired at")


def test_a_one_off_task_runs_once_then_disables(scheduler, sync_engine):
    now = utcnow()
    add_interval_task(sync_engine, "once", every=1, period="seconds", one_off=True)
    for second in range(4):
        step(scheduler, now + timedelta(seconds=second))
    assert len(queued_runs("once")) == 1
    row = get_task(sync_engine, "once")
    assert (row.enabled, row.total_run_count) == (False, 1) and "finished" in row.disabled_reason


def test_a_clocked_task_fires_at_its_time_once(scheduler, sync_engine):
    now = utcnow().replace(microsecond=0)
    with Session(sync_engine) as session, session.begin():
        session.add(
            PeriodicTaskDB(
                name="clocked", task="erp.ping", clocked=ClockedScheduleDB(clocked_time=now + timedelta(hours=1))
            )
        )
    step(scheduler, now)
    assert queued_runs("clocked") == [] and get_task(sync_engine, "clocked").next_run_at == now + timedelta(hours=1)
    for minutes in (60, 61, 62):
        step(scheduler, now + timedelta(minutes=minutes, seconds=1))
    assert [run["scheduled_at"] for run in queued_runs("clocked")] == [now + timedelta(hours=1)]
    row = get_task(sync_engine, "clocked")
    assert not row.enabled and row.total_run_count == 1
