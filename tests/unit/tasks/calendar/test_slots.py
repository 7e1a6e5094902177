"""Slots in a range and around a moment (backfill, "why not"), all from the one slot walk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from erp.tasks.calendar.schedules import ClockedSpec, CrontabSpec, IntervalSpec, grid_slot
from erp.tasks.calendar.slots import nearest_slots_to, next_slot, previous_slot, range_slots


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_the_grid_is_the_same_from_any_of_its_slots_and_any_moment():
    step = timedelta(minutes=7)
    anchor = at(2030, 1, 1, 0, 3)
    for moment in (at(2029, 12, 31, 23, 59), at(2030, 1, 1, 0, 3), at(2030, 6, 1, 12, 0, 0)):
        slot = grid_slot(anchor, step, moment)
        assert slot >= moment > slot - step
        assert (slot - anchor) % step == timedelta(0)
        assert grid_slot(anchor + 1000 * step, step, moment) == slot


def test_an_interval_range_lies_on_the_grid_and_is_counted_exactly():
    spec = IntervalSpec(10, "minutes")
    slots, total = range_slots(spec, at(2030, 1, 1, 0, 5), (None, None), at(2030, 1, 1), at(2030, 1, 2), 3)
    assert slots == [at(2030, 1, 1, 0, 5), at(2030, 1, 1, 0, 15), at(2030, 1, 1, 0, 25)]
    assert total == 144


def test_a_walked_range_says_more_by_one_past_the_limit():
    spec = CrontabSpec(minute="0")
    slots, total = range_slots(spec, None, (None, None), at(2030, 1, 1), at(2030, 1, 2), 5)
    assert slots == [at(2030, 1, 1, hour) for hour in range(5)]
    assert total == 6


def test_bounds_cut_the_range():
    spec = ClockedSpec(at(2030, 1, 1, 12))
    assert range_slots(spec, None, (None, at(2030, 1, 1, 11)), at(2030, 1, 1), at(2030, 1, 2), 10) == ([], 0)
    assert range_slots(spec, None, (None, None), at(2030, 1, 1), at(2030, 1, 2), 10) == ([at(2030, 1, 1, 12)], 1)


def test_the_nearest_slots_of_a_moment_that_is_not_one():
    spec = CrontabSpec(minute="30", hour="9")
    assert nearest_slots_to(spec, None, at(2030, 1, 1, 9, 30)) is None
    assert nearest_slots_to(spec, None, at(2030, 1, 1, 12)) == [at(2030, 1, 1, 9, 30), at(2030, 1, 2, 9, 30)]
    assert next_slot(IntervalSpec(1, "hours"), at(2030, 1, 1, 0, 20), at(2030, 1, 1, 5)) == at(2030, 1, 1, 5, 20)


def test_the_slot_before_is_found_across_the_longest_gap_a_crontab_has():
    """Feb 29 on a Thursday: 2080, then 2120; from 2100 the slot before is twenty years back."""
    spec = CrontabSpec(minute="29", hour="0", day_of_month="29", month_of_year="2", day_of_week="thu")
    assert previous_slot(spec, None, at(2100, 3, 1)) == at(2080, 2, 29, 0, 29)
    assert nearest_slots_to(spec, None, at(2100, 3, 1)) == [at(2080, 2, 29, 0, 29), at(2120, 2, 29, 0, 29)]
