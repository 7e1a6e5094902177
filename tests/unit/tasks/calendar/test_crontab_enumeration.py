"""Chained crontab firings against an independent minute-by-minute walk over whole years.

The expected firings are derived from the rule in erp/tasks/calendar/crontab.py's docstring using only
zoneinfo: walk every UTC minute of the year, read its wall time, and
- for a wildcard or step hour, fire at every minute whose wall time matches;
- for a fixed hour, fire at the first minute that shows a matching wall time, and for a
  matching wall time that no minute shows (a gap), at the gap's end plus its distance from
  the gap's start.
The schedule's own parser is not used: each case spells out its fields as sets.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from erp.tasks.calendar.schedules import CrontabSpec, next_run_after

UTC = UTC
MINUTE = timedelta(minutes=1)
ALL_HOURS = frozenset(range(24))
ALL_DAYS = frozenset(range(7))


@dataclass(frozen=True)
class Case:
    minute: str
    hour: str
    day_of_week: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_week: frozenset[int]  # Sunday 0
    wildcard_hour: bool

    def matches(self, wall: datetime) -> bool:
        return wall.minute in self.minutes and wall.hour in self.hours and wall.isoweekday() % 7 in self.days_of_week


CASES = {
    "hourly": Case("0", "*", "*", frozenset({0}), ALL_HOURS, ALL_DAYS, True),
    "quarter-hours, every 2nd hour": Case(
        "*/15", "*/2", "*", frozenset({0, 15, 30, 45}), frozenset(range(0, 24, 2)), ALL_DAYS, True
    ),
    "stepped range, weekends": Case(
        "5,50", "1-23/3", "sat,sun", frozenset({5, 50}), frozenset(range(1, 24, 3)), frozenset({6, 0}), True
    ),
    "02:30 daily": Case("30", "2", "*", frozenset({30}), frozenset({2}), ALL_DAYS, False),
    "02:45 daily": Case("45", "2", "*", frozenset({45}), frozenset({2}), ALL_DAYS, False),
    "several minutes 01-03, Sundays": Case(
        "0,15,40", "1-3", "sun", frozenset({0, 15, 40}), frozenset({1, 2, 3}), frozenset({0}), False
    ),
    # Firings a week apart: the run before a change-over Sunday is far from the change.
    "02:15 and 02:40, Sundays": Case("15,40", "2", "sun", frozenset({15, 40}), frozenset({2}), frozenset({0}), False),
    "around midnight": Case("0,30", "0,23", "*", frozenset({0, 30}), frozenset({0, 23}), ALL_DAYS, False),
}

ZONE_YEARS = [
    ("UTC", 2026),
    ("Europe/Berlin", 2026),
    ("America/New_York", 2026),
    ("Australia/Sydney", 2026),
    ("Australia/Lord_Howe", 2026),  # 30-minute shift at 02:00
    ("Pacific/Chatham", 2026),  # 12:45 / 13:45, shifts at 02:45 and 03:45
    ("America/Santiago", 2026),  # shifts at midnight
]


@functools.cache
def walk(zone_name: str, year: int) -> tuple[tuple[datetime, datetime], ...]:
    """(UTC minute, naive local wall time) for every minute from a week before the year to a week after."""
    zone = ZoneInfo(zone_name)
    start = datetime(year - 1, 12, 24, tzinfo=UTC)
    end = datetime(year + 1, 1, 8, tzinfo=UTC)
    minutes: list[tuple[datetime, datetime]] = []
    hour = start
    while hour < end:
        # Per minute; the offset is looked up per minute only in the hours where it changes.
        offset_start = hour.astimezone(zone).utcoffset()
        offset_end = (hour + timedelta(hours=1)).astimezone(zone).utcoffset()
        assert offset_start is not None and offset_end is not None
        for index in range(60):
            moment = hour + index * MINUTE
            offset = offset_start if offset_start == offset_end else moment.astimezone(zone).utcoffset()
            assert offset is not None
            minutes.append((moment, moment.replace(tzinfo=None) + offset))
        hour += timedelta(hours=1)
    return tuple(minutes)


def expected_firings(case: Case, zone_name: str, year: int) -> list[datetime]:
    minutes = walk(zone_name, year)
    if case.wildcard_hour:
        return [moment for moment, wall in minutes if case.matches(wall)]
    fired: dict[datetime, datetime] = {}
    gaps: list[tuple[datetime, datetime, datetime]] = []  # first missing wall, first wall after, instant
    for (moment, wall), (_, previous_wall) in zip(minutes[1:], minutes, strict=False):
        if wall - previous_wall > MINUTE:
            gaps.append((previous_wall + MINUTE, wall, moment))
    for moment, wall in minutes:
        if case.matches(wall) and wall not in fired:
            fired[wall] = moment
    day = minutes[0][1].date()
    while day <= minutes[-1][1].date():
        for hour in case.hours:
            for minute in case.minutes:
                wall = datetime(day.year, day.month, day.day, hour, minute)
                if case.matches(wall) and wall not in fired and minutes[0][1] < wall < minutes[-1][1]:
                    gap_start, _gap_end, moment = next(gap for gap in gaps if gap[0] <= wall < gap[1])
                    fired[wall] = moment + (wall - gap_start)
        day += timedelta(days=1)
    return sorted(set(fired.values()))


def chained(spec: CrontabSpec, start: datetime, end: datetime) -> list[datetime]:
    moments: list[datetime] = []
    moment = next_run_after(spec, start)
    while moment is not None and moment < end:
        moments.append(moment)
        moment = next_run_after(spec, moment)
    return moments


def test_the_walk_sees_the_zones_changes() -> None:
    """The independent side is itself right: Chatham's spring gap is 02:45-03:45 local."""
    minutes = walk("Pacific/Chatham", 2026)
    jumps = [(before, after) for (_, before), (_, after) in itertools.pairwise(minutes) if after - before != MINUTE]
    assert (datetime(2026, 9, 27, 2, 44), datetime(2026, 9, 27, 3, 45)) in jumps
    assert (datetime(2026, 4, 5, 3, 44), datetime(2026, 4, 5, 2, 45)) in jumps


@pytest.mark.parametrize(("zone", "year"), ZONE_YEARS)
@pytest.mark.parametrize("name", list(CASES))
def test_chained_firings_match_a_minute_by_minute_walk(zone: str, year: int, name: str) -> None:
    case = CASES[name]
    spec = CrontabSpec(minute=case.minute, hour=case.hour, day_of_week=case.day_of_week, timezone=zone)
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    expected = [moment for moment in expected_firings(case, zone, year) if start < moment < end]
    actual = chained(spec, start, end)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, (missing[:5], extra[:5])
    assert actual == expected
