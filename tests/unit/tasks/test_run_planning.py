"""What beat plans for a due row, on rows built in memory (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from erp.tasks.periodic_messages import periodic_run_id
from erp.tasks.run_planning import plan_row
from erp.tasks.scheduler_models import IntervalScheduleDB, PeriodicTaskDB

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def row(**fields) -> PeriodicTaskDB:
    defaults = {
        "id": 7,
        "name": "every minute",
        "task": "erp.ping",
        "args": [1],
        "kwargs": {"a": 2},
        "misfire_policy": "run_once",
        "one_off": False,
        "next_run_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "interval": IntervalScheduleDB(id=1, every=1, period="minutes"),
        "interval_id": 1,
    }
    return PeriodicTaskDB(**{**defaults, **fields})


def plan(task: PeriodicTaskDB, now: datetime = NOW):
    return plan_row(task, now, grace_seconds=60, max_catch_up=10)


def test_an_on_time_row_sends_one_run_with_its_arguments_and_advances():
    update, runs = plan(row())
    assert [(run.scheduled_at, run.args, run.kwargs) for run in runs] == [
        (datetime(2026, 3, 1, 12, 0, tzinfo=UTC), [1], {"a": 2})
    ]
    assert runs[0].id == periodic_run_id(7, datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    assert (update.next_run_at, update.runs_sent, update.enabled) == (datetime(2026, 3, 1, 12, 1, tzinfo=UTC), 1, True)


def test_a_row_whose_args_are_not_a_list_is_disabled_with_the_reason():
    update, runs = plan(row(args={"not": "a list"}))
    assert runs == [] and not update.enabled
    assert update.disabled_reason is not None and "args must be a JSON array" in update.disabled_reason


def test_an_expired_row_sends_nothing_and_says_when_it_expired():
    expires = NOW - timedelta(minutes=5)
    update, runs = plan(row(expires=expires))
    assert runs == [] and not update.enabled and update.next_run_at is None
    assert update.disabled_reason == f"expired at {expires.isoformat()}"


def test_a_one_off_row_is_finished_after_its_run():
    update, runs = plan(row(one_off=True))
    assert len(runs) == 1 and not update.enabled and update.disabled_reason is not None
    assert update.disabled_reason.startswith("finished")


def test_run_once_after_downtime_sends_the_latest_missed_time():
    update, runs = plan(row(), now=NOW + timedelta(hours=1))
    assert [run.scheduled_at for run in runs] == [datetime(2026, 3, 1, 13, 0, tzinfo=UTC)]
    assert update.next_run_at == datetime(2026, 3, 1, 13, 1, tzinfo=UTC)
