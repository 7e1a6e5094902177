"""Crontab schedules: which wall-clock times match, and when they fire around DST changes.

Fields are read on the wall clock of the schedule's IANA zone, and what a DST change does
depends on what the hour field says:
- A wildcard or step hour (`*`, `*/2`, `1-23/3`: the field contains `*` or `/`) asks for a
  rhythm, so it fires at every real instant whose local wall time matches: an hourly job runs
  25 times on a fall-back day (the repeated hour twice) and 23 times on a spring-forward day
  (wall times in the gap do not exist, so they do not fire). Celery skips the repeated hour
  (celery#10107), which leaves an hour-long hole in an hourly job.
- A fixed hour (numbers, lists, ranges without a step) asks for a time of day, so it fires
  once a day on DST days too. A wall time that happens twice fires at its first occurrence. A
  wall time that does not exist fires once, shifted forward by the gap: 02:30 in
  Europe/Berlin on the spring-forward day fires at 03:30 CEST (01:30 UTC).
Two wall times that land on the same instant fire once. A day matches when its month, day of
month and day of week all match (Celery's crontab semantics). Months are numbers (1-12); days
of the week are 0-6 with Sunday 0, or names (sun, mon, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab_parser

from erp.tasks.calendar.specs import CrontabSpec, ScheduleError

# How far a crontab is searched for a matching day. The Gregorian calendar repeats every 400
# years, which are exactly 146,097 days (20,871 weeks): month, day of month and day of week fall
# together again as they did. So a crontab that matches no day in that span matches none ever,
# and one that matches does so again within it. The longest wait is a Feb 29 on a given weekday
# across a century year that is no leap year: 40 years (Thursdays: 2052, 2080, then 2120).
_CRONTAB_HORIZON_DAYS = 146_097
# DST shifts are at most two hours; scanning this far around a candidate covers any gap or fold.
_DST_WINDOW = timedelta(hours=3)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(f"timezone {name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None


@dataclass(frozen=True)
class _Crontab:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_week: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    zone: ZoneInfo
    # A wildcard or step hour fires at every real instant that shows a matching wall time.
    every_matching_instant: bool

    def matches(self, day: date) -> bool:
        return day.month in self.months and day.day in self.days_of_month and day.isoweekday() % 7 in self.days_of_week


def _parse_field(spec: CrontabSpec, field: str, max_value: int, min_value: int, allowed: str) -> set[int]:
    text = str(getattr(spec, field)).strip()
    try:
        values: set[int] = crontab_parser(max_value, min_value).parse(text)
    except Exception as error:  # crontab_parser raises ValueError, KeyError or ParseException
        raise ScheduleError(f"crontab {field} {text!r} is not valid ({allowed}): {error}") from None
    if not values or any(value < min_value or value >= max_value + min_value for value in values):
        raise ScheduleError(f"crontab {field} {text!r} is out of range ({allowed})")
    return values


@functools.lru_cache(maxsize=4096)
def _parse_crontab(spec: CrontabSpec) -> _Crontab:
    return _Crontab(
        minutes=tuple(sorted(_parse_field(spec, "minute", 60, 0, "0-59"))),
        hours=tuple(sorted(_parse_field(spec, "hour", 24, 0, "0-23"))),
        days_of_week=frozenset(_parse_field(spec, "day_of_week", 7, 0, "0-6 with Sunday 0, or sun-sat")),
        days_of_month=frozenset(_parse_field(spec, "day_of_month", 31, 1, "1-31")),
        months=frozenset(_parse_field(spec, "month_of_year", 12, 1, "1-12")),
        zone=_zone(spec.timezone),
        every_matching_instant="*" in str(spec.hour) or "/" in str(spec.hour),
    )


def check_crontab(spec: CrontabSpec) -> None:
    """Raise ScheduleError, saying what is wrong, unless the crontab's fields are valid and fall
    on the same day at least once (within one Gregorian cycle, hence ever)."""
    cron = _parse_crontab(spec)
    start = date(2000, 1, 1)
    if not any(cron.matches(start + timedelta(days=offset)) for offset in range(_CRONTAB_HORIZON_DAYS)):
        raise ScheduleError(
            f"crontab day_of_month {spec.day_of_month!r}, month_of_year {spec.month_of_year!r} and "
            f"day_of_week {spec.day_of_week!r} never fall on the same day"
        )


def crontab_after(spec: CrontabSpec, after: datetime) -> datetime | None:
    """The first firing strictly after `after` (UTC), or None within the search's horizon."""
    return _crontab_after(_parse_crontab(spec), after)


def _wall_times(cron: _Crontab, start: datetime) -> Iterator[datetime]:
    """Matching naive wall-clock times at or after `start`, in wall-clock order."""
    day = start.date()
    for _ in range(_CRONTAB_HORIZON_DAYS):
        if cron.matches(day):
            first_day = day == start.date()
            for hour in cron.hours:
                if first_day and hour < start.hour:
                    continue
                for minute in cron.minutes:
                    wall = datetime(day.year, day.month, day.day, hour, minute)
                    if wall >= start:
                        yield wall
        day += timedelta(days=1)


def _instants(cron: _Crontab, wall: datetime) -> tuple[datetime, ...]:
    """The real instants at which a matching wall time fires: none, one or two (see the module docstring)."""
    zone = cron.zone
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if first < second:
        # A repeated wall time (PEP 495: fold=0 is the earlier occurrence).
        return (first, second) if cron.every_matching_instant else (first,)
    # A wall time in a gap: fold=0 reads it with the offset from before the change, which
    # lands it as far after the gap's start as it is after the last wall time before the gap.
    return () if cron.every_matching_instant else (first,)


def _steady(zone: ZoneInfo, moment: datetime) -> bool:
    """No UTC offset change within _DST_WINDOW of `moment` (so wall order is UTC order there)."""
    return (moment - _DST_WINDOW).astimezone(zone).utcoffset() == (moment + _DST_WINDOW).astimezone(zone).utcoffset()


def _crontab_after(cron: _Crontab, after: datetime) -> datetime | None:
    """The first firing strictly after `after`.

    Wall times are walked in wall-clock order, which is UTC order except near an offset change:
    there a wall time in a gap fires later than the ones after it, and a repeated one fires a
    second time after them. So the first candidate is trusted only when no change is near it;
    otherwise every wall time up to _DST_WINDOW past it is looked at too, and the earliest
    instant wins. Whether a change is near must be judged at the candidate, not at `after`:
    the candidate can be days away (Lord Howe's weekly 02:15 and 02:40 on the Sunday its
    clocks move), so a check around `after` alone takes the shifted 02:15 for the first run.
    """
    zone = cron.zone
    local = after.astimezone(zone).replace(tzinfo=None)
    # Near a change, a wall time before `local` can fire after `after` (a gap shifts it
    # forward, a repeated one fires again): start a little back.
    start = local if _steady(zone, after) else local - _DST_WINDOW
    best: datetime | None = None
    best_wall: datetime | None = None
    for wall in _wall_times(cron, start.replace(second=0, microsecond=0)):
        if best is not None and best_wall is not None and wall > best_wall + _DST_WINDOW:
            break
        for moment in _instants(cron, wall):
            if moment > after and (best is None or moment < best):
                best, best_wall = moment, wall
        if best is not None and best_wall == wall and _steady(zone, best):
            # Later wall times map to later instants: a DST shift is shorter than the window.
            return best
    return best
