"""A schedule's slots in a range and around a moment: what a backfill plans and what "why didn't
it run at T?" shows as the nearest slots. Pure, like the rest of the calendar.

An interval's slots lie on the grid through `anchor`, a slot the schedule had (its next or last
run, or its start time), so they line up with the ones beat recorded; crontab and solar
schedules are walked with `slots_after`, which cannot step backwards.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from erp.tasks.calendar.schedules import (
    ClockedSpec,
    IntervalSpec,
    ScheduleSpec,
    grid_slot,
    interval_step,
    slots_after,
    validate,
)

_MICROSECOND = timedelta(microseconds=1)
# How far back `previous_slot` looks for a crontab or solar slot: 2 h, 16 h, 5 days, 43 days,
# 341 days, 7.5 years, 60 years. A solar event happens every year; the longest a crontab can go
# without firing is 40 years (erp.tasks.calendar.crontab).
_LOOK_BACK_FIRST = timedelta(hours=2)
_LOOK_BACK_STEPS = 7


def range_slots(
    spec: ScheduleSpec,
    anchor: datetime | None,
    bounds: tuple[datetime | None, datetime | None],
    start: datetime,
    end: datetime,
    limit: int,
) -> tuple[list[datetime], int]:
    """Up to `limit` slots of a schedule in [start, end] within its `bounds` (start_time,
    expires), and how many there are: exact for intervals (arithmetic) and clocked schedules;
    for crontab and solar ones, which are walked, at most `limit + 1`, meaning "more"."""
    validate(spec)
    start_time, expires = bounds
    if start_time is not None:
        start = max(start, start_time)
    if expires is not None:
        end = min(end, expires)
    if end < start:
        return [], 0
    if isinstance(spec, ClockedSpec):
        clocked = spec.clocked_time.astimezone(UTC)
        return ([clocked], 1) if start <= clocked <= end else ([], 0)
    if isinstance(spec, IntervalSpec):
        step = interval_step(spec)
        first = grid_slot(anchor or start, step, start)
        total = 0 if first > end else (end - first) // step + 1
        return [first + index * step for index in range(min(total, limit))], total
    walked = itertools.takewhile(lambda slot: slot <= end, slots_after(spec, start - _MICROSECOND))
    slots = list(itertools.islice(walked, limit + 1))
    return slots[:limit], len(slots)


def previous_slot(spec: ScheduleSpec, anchor: datetime | None, moment: datetime) -> datetime | None:
    """The last slot strictly before `moment` (None when there is none within 60 years)."""
    if isinstance(spec, ClockedSpec):
        clocked = spec.clocked_time.astimezone(UTC)
        return clocked if clocked < moment else None
    if isinstance(spec, IntervalSpec):
        step = interval_step(spec)
        return grid_slot(anchor or moment, step, moment) - step
    # Crontab and solar only go forwards: walk from a point before `moment`, further back if needed.
    window = _LOOK_BACK_FIRST
    for _ in range(_LOOK_BACK_STEPS):
        before = list(itertools.takewhile(lambda slot: slot < moment, slots_after(spec, moment - window)))
        if before:
            return before[-1]
        window *= 8
    return None


def next_slot(spec: ScheduleSpec, anchor: datetime | None, moment: datetime) -> datetime | None:
    """The first slot at or after `moment`."""
    if isinstance(spec, IntervalSpec) and anchor is not None:
        return grid_slot(anchor, interval_step(spec), moment)
    return next(slots_after(spec, moment - _MICROSECOND), None)


def nearest_slots_to(spec: ScheduleSpec, anchor: datetime | None, moment: datetime) -> list[datetime] | None:
    """None when `moment` is a slot of the schedule; otherwise the slots just before and after it
    (those that exist). Walks up to a few thousand slots of a crontab or solar schedule."""
    following = next_slot(spec, anchor, moment)
    if following == moment:
        return None
    before = previous_slot(spec, anchor, moment)
    return [slot for slot in (before, following) if slot is not None]
