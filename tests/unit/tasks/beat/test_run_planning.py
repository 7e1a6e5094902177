"""What beat records for a due row, on rows built in memory (no database): misfires, one-offs,
expiry, pause, overlap and jitter, with a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from erp.tasks.beat.run_planning import plan_row
from erp.tasks.calendar.schedules import jitter_offset
from erp.tasks.periodic_messages import periodic_run_id
from erp.tasks.scheduler_models import IntervalScheduleDB, PeriodicTaskDB

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = SLOT + timedelta(seconds=30)


def row(**fields) -> PeriodicTaskDB:
    defaults = {
        "id": 7,
        "name": "every minute",
        "task": "erp.ping",
        "args": [1],
        "kwargs": {"a": 2},
        "headers": {},
        "misfire_policy": "run_once",
        "overlap_policy": "allow",
        "jitter_seconds": 0,
        "one_off": False,
        "next_run_at": SLOT,
        "interval": IntervalScheduleDB(id=1, every=1, period="minutes"),
        "interval_id": 1,
    }
    return PeriodicTaskDB(**{**defaults, **fields})


def plan(task: PeriodicTaskDB, now: datetime = NOW, **ledger):
    return plan_row(task, now, grace_seconds=60, max_catch_up=10, **ledger)


def states(occurrences) -> list[tuple[datetime, str, str | None]]:
    return [(occurrence.scheduled_at, occurrence.state, occurrence.skip_reason) for occurrence in occurrences]


def test_an_on_time_row_plans_one_occurrence_and_advances():
    update, occurrences = plan(row())
    assert states(occurrences) == [(SLOT, "planned", None)]
    assert occurrences[0].message_id == periodic_run_id(7, SLOT) and occurrences[0].due_at == SLOT
    assert (update.next_run_at, update.runs_sent, update.enabled) == (SLOT + timedelta(minutes=1), 1, True)


def test_a_row_whose_args_are_not_a_list_is_disabled_with_the_reason():
    update, occurrences = plan(row(args={"not": "a list"}))
    assert occurrences == [] and not update.enabled
    assert update.disabled_reason is not None and "args must be a JSON array" in update.disabled_reason


def test_a_row_whose_routing_reaches_no_queue_is_disabled():
    update, _ = plan(row(), routing_problem=lambda task: "exchange 'x' has no queue bound to it")
    assert not update.enabled and "reach no queue" in (update.disabled_reason or "")


def test_an_expired_row_records_the_slot_as_skipped_and_says_when_it_expired():
    expires = NOW - timedelta(minutes=5)
    update, occurrences = plan(row(expires=expires))
    assert states(occurrences) == [(SLOT, "skipped", "expired")]
    assert not update.enabled and update.next_run_at is None
    assert update.disabled_reason == f"expired at {expires.isoformat()}"


@pytest.mark.parametrize("policy", ["run_once", "skip", "run_all"])
def test_a_one_off_seen_late_runs_exactly_once_at_its_slot(policy):
    update, occurrences = plan(row(one_off=True, misfire_policy=policy), now=SLOT + timedelta(minutes=50))
    assert states(occurrences) == [(SLOT, "planned", None)]
    assert not update.enabled and (update.disabled_reason or "").startswith("finished")


def test_run_once_after_downtime_plans_the_latest_and_records_the_others_as_missed():
    update, occurrences = plan(row(), now=SLOT + timedelta(minutes=5, seconds=30))
    planned = [o.scheduled_at for o in occurrences if o.state == "planned"]
    missed = [o.scheduled_at for o in occurrences if o.skip_reason == "misfire"]
    assert planned == [SLOT + timedelta(minutes=5)]
    assert missed == [SLOT + timedelta(minutes=minutes) for minutes in range(5)]
    assert update.next_run_at == SLOT + timedelta(minutes=6)


def test_a_paused_task_records_each_slot_as_skipped_and_keeps_its_schedule():
    update, occurrences = plan(row(paused_at=SLOT - timedelta(days=1)))
    assert states(occurrences) == [(SLOT, "skipped", "paused")]
    assert update.enabled and update.next_run_at == SLOT + timedelta(minutes=1) and update.runs_sent == 0


def test_overlap_skip_records_the_occurrence_as_skipped_while_the_previous_runs():
    _, occurrences = plan(row(overlap_policy="skip"), has_unfinished=True)
    assert states(occurrences) == [(SLOT, "skipped", "overlap")]
    _, occurrences = plan(row(overlap_policy="skip"), has_unfinished=False)
    assert states(occurrences) == [(SLOT, "planned", None)]


def test_overlap_buffer_one_holds_one_and_skips_the_rest():
    _, occurrences = plan(row(overlap_policy="buffer_one"), has_unfinished=True)
    assert states(occurrences) == [(SLOT, "held", None)]
    _, occurrences = plan(row(overlap_policy="buffer_one"), has_unfinished=True, has_held=True)
    assert states(occurrences) == [(SLOT, "skipped", "overlap")]


def test_run_all_catch_up_under_overlap_skip_sends_only_the_first():
    task = row(overlap_policy="skip", misfire_policy="run_all")
    _, occurrences = plan(task, now=SLOT + timedelta(minutes=2, seconds=30))
    assert [o.state for o in occurrences] == ["planned", "skipped", "skipped"]


def test_overlap_allow_ignores_an_unfinished_previous_run():
    _, occurrences = plan(row(), has_unfinished=True)
    assert states(occurrences) == [(SLOT, "planned", None)]


def test_jitter_is_stable_within_its_range_and_shown_in_the_due_time():
    offsets = {jitter_offset(7, SLOT + timedelta(minutes=minute), 30) for minute in range(200)}
    assert all(timedelta(0) <= offset < timedelta(seconds=30) for offset in offsets)
    assert len(offsets) > 150, "spread over the range"
    assert jitter_offset(7, SLOT, 30) == jitter_offset(7, SLOT, 30), "two beats agree"
    _, occurrences = plan(row(jitter_seconds=30))
    assert occurrences[0].scheduled_at == SLOT and occurrences[0].due_at == SLOT + jitter_offset(7, SLOT, 30)
