"""Schedule arithmetic: when does a schedule fire? Pure functions, no clock of their own.

(Longer than 400 lines on purpose: validation, the crontab and DST rules, the public questions
and the misfire rules are read together to answer "when does it fire, and what is sent"; the
solar search is its own module, erp.tasks.solar.)

Every datetime in and out is timezone-aware; results are UTC. The caller passes `now`, so
tests control time by arguments.

Crontab and daylight saving time. Fields are read on the wall clock of the schedule's IANA
zone, and what a DST change does depends on what the hour field says:
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

Misfires (`plan_runs`). The scheduled times due at `now` are those from the stored next run
up to `now`. If the oldest is at most `grace_seconds` late, all are on time and all are sent
(at most `max_catch_up`, the most recent). Otherwise the task's policy decides:
- `run_once` (default): send one run, the most recent due time, then continue;
- `skip`: send only the due times that are within the grace window (usually none), then
  continue at the next future time;
- `run_all`: send every due time, at most `max_catch_up` (the most recent ones).
In every case the new next run is the first firing strictly after `now`, and an interval
keeps its original grid (start + k * interval).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab_parser

from erp.tasks import solar
from erp.tasks.schedule_kinds import (
    INTERVAL_PERIODS,
    MISFIRE_POLICIES,
    MISFIRE_RUN_ALL,
    MISFIRE_RUN_ONCE,
    MISFIRE_SKIP,
    SOLAR_EVENTS,
    ScheduleKind,
)

# The longest interval accepted. A century is longer than any business rhythm (an interval of
# more is a typing slip, not a plan), and it keeps start + k * interval well inside datetime's
# range (year 9999) for any start of this era.
MAX_INTERVAL_DAYS = 36500
_MICROSECONDS_PER = {"days": 86_400_000_000, "hours": 3_600_000_000, "minutes": 60_000_000, "seconds": 1_000_000}
_MICROSECONDS_PER["microseconds"] = 1
# How many runs `upcoming` computes at most: a preview, not a walk over every microsecond.
MAX_UPCOMING = 1000
# Longest a valid crontab can go without firing: Feb 29 on a given weekday recurs within 28 years.
_CRONTAB_HORIZON_DAYS = 366 * 29
# DST shifts are at most two hours; scanning this far around a candidate covers any gap or fold.
_DST_WINDOW = timedelta(hours=3)


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class IntervalSpec:
    every: int
    period: str = "seconds"


@dataclass(frozen=True)
class CrontabSpec:
    minute: str = "*"
    hour: str = "*"
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"
    timezone: str = "UTC"


@dataclass(frozen=True)
class ClockedSpec:
    clocked_time: datetime


@dataclass(frozen=True)
class SolarSpec:
    event: str
    latitude: float
    longitude: float


ScheduleSpec = IntervalSpec | CrontabSpec | ClockedSpec | SolarSpec
SPEC_TYPES: dict[ScheduleKind, type[ScheduleSpec]] = {
    "interval": IntervalSpec,
    "crontab": CrontabSpec,
    "clocked": ClockedSpec,
    "solar": SolarSpec,
}


def spec_from_fields(kind: ScheduleKind, fields: Mapping[str, Any]) -> ScheduleSpec:
    """The spec of a schedule given by its fields (a table row's columns, a request's body)."""
    spec_type = SPEC_TYPES[kind]
    return spec_type(
        **{field.name: fields[field.name] for field in dataclass_fields(spec_type) if field.name in fields}
    )


@dataclass(frozen=True)
class RunPlan:
    send: tuple[datetime, ...]
    next_run_at: datetime | None
    # Due times the misfire policy did not send (at most max_catch_up of the most recent), for
    # the run ledger to record as skipped.
    missed: tuple[datetime, ...] = ()


# --- validation -------------------------------------------------------------------------------


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


def _interval(spec: IntervalSpec) -> timedelta:
    if spec.period not in INTERVAL_PERIODS:
        raise ScheduleError(f"interval period {spec.period!r} is not one of {', '.join(INTERVAL_PERIODS)}")
    return timedelta(**{spec.period: spec.every})


def validate(spec: ScheduleSpec) -> None:
    """Raise ScheduleError, saying what is wrong, unless the schedule can fire."""
    if isinstance(spec, IntervalSpec):
        if spec.period not in INTERVAL_PERIODS:
            raise ScheduleError(f"interval period {spec.period!r} is not one of {', '.join(INTERVAL_PERIODS)}")
        if not isinstance(spec.every, int) or isinstance(spec.every, bool) or spec.every <= 0:
            raise ScheduleError(f"interval every must be a whole number above 0, got {spec.every!r}")
        unit = _MICROSECONDS_PER[spec.period]
        if spec.every * unit > MAX_INTERVAL_DAYS * _MICROSECONDS_PER["days"]:
            limit = MAX_INTERVAL_DAYS * _MICROSECONDS_PER["days"] // unit
            raise ScheduleError(
                f"interval of {spec.every} {spec.period} is longer than the maximum of {limit} {spec.period} "
                f"({MAX_INTERVAL_DAYS // 365} years)"
            )
    elif isinstance(spec, CrontabSpec):
        cron = _parse_crontab(spec)
        start = date(2000, 1, 1)
        if not any(cron.matches(start + timedelta(days=offset)) for offset in range(_CRONTAB_HORIZON_DAYS)):
            raise ScheduleError(
                f"crontab day_of_month {spec.day_of_month!r}, month_of_year {spec.month_of_year!r} and "
                f"day_of_week {spec.day_of_week!r} never fall on the same day"
            )
    elif isinstance(spec, ClockedSpec):
        if spec.clocked_time.utcoffset() is None:
            raise ScheduleError("clocked_time needs a time zone or UTC offset")
        try:
            spec.clocked_time.astimezone(UTC)
        except OverflowError:
            raise ScheduleError(
                f"clocked_time {spec.clocked_time.isoformat()} is beyond the year 9999 in UTC"
            ) from None
    elif isinstance(spec, SolarSpec):
        if spec.event not in SOLAR_EVENTS:
            raise ScheduleError(f"solar event {spec.event!r} is not one of {', '.join(SOLAR_EVENTS)}")
        if not -90 <= spec.latitude <= 90:
            raise ScheduleError(f"latitude {spec.latitude} is outside -90..90")
        if not -180 <= spec.longitude <= 180:
            raise ScheduleError(f"longitude {spec.longitude} is outside -180..180")
    else:
        raise ScheduleError(f"unknown schedule type {type(spec).__name__}")


# --- crontab ----------------------------------------------------------------------------------


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


# --- the public questions ---------------------------------------------------------------------


def next_run_after(spec: ScheduleSpec, scheduled_at: datetime) -> datetime | None:
    """The next firing strictly after `scheduled_at` (None: it never fires again).

    A run that would fall beyond the year 9999 (where datetime ends) is no run: None, so beat
    treats the schedule as finished rather than failing on it every time it looks. Apart from
    that only ScheduleError is raised, and only for a schedule that validate() refuses.
    """
    try:
        return _next_run_after(spec, scheduled_at)
    except OverflowError:
        # Some step (an offset, a day, a sum) went past datetime's range: the run would be
        # beyond the year 9999.
        return None


def _next_run_after(spec: ScheduleSpec, scheduled_at: datetime) -> datetime | None:
    if isinstance(spec, IntervalSpec):
        return scheduled_at.astimezone(UTC) + _interval(spec)
    if isinstance(spec, CrontabSpec):
        return _crontab_after(_parse_crontab(spec), scheduled_at.astimezone(UTC))
    if isinstance(spec, ClockedSpec):
        return None
    if isinstance(spec, SolarSpec):
        return solar.next_event(spec.event, spec.latitude, spec.longitude, scheduled_at.astimezone(UTC))
    raise ScheduleError(f"unknown schedule type {type(spec).__name__}")


def first_run_at(spec: ScheduleSpec, *, now: datetime, start_time: datetime | None = None) -> datetime | None:
    """When a new (or newly changed) schedule first fires: at or after max(now, start_time).

    An interval runs at once (or at its start_time; a start_time in the past keeps its grid);
    a clocked schedule fires at its time even if that has passed: it is a one-off that is due.
    None when there is no such run before the end of the year 9999 (see next_run_after).
    """
    try:
        return _first_run_at(spec, now=now, start_time=start_time)
    except OverflowError:
        return None


def _first_run_at(spec: ScheduleSpec, *, now: datetime, start_time: datetime | None) -> datetime | None:
    if isinstance(spec, ClockedSpec):
        return spec.clocked_time.astimezone(UTC)
    if isinstance(spec, IntervalSpec):
        if start_time is None:
            return now.astimezone(UTC)
        if start_time >= now:
            return start_time.astimezone(UTC)
        step = _interval(spec)
        # Whole numbers, not a float quotient: a microsecond grid over centuries needs every digit.
        return (start_time - ((start_time - now) // step) * step).astimezone(UTC)
    earliest = max(now, start_time) if start_time else now
    return next_run_after(spec, earliest - timedelta(microseconds=1))


def _recent_due_times(spec: ScheduleSpec, first: datetime, now: datetime, keep: int) -> list[datetime]:
    """The last `keep` scheduled times in [first, now], oldest first, without walking them all."""
    if isinstance(spec, IntervalSpec):
        step = _interval(spec)
        count = (now - first) // step + 1
        return [first + index * step for index in range(max(0, count - keep), count)]
    # Crontab and solar cannot be stepped backwards: walk forward from a point near `now`,
    # going further back only while that finds fewer than `keep` times.
    window = timedelta(hours=1)
    while True:
        start = first if now - first <= window else now - window
        moment = start if start == first else next_run_after(spec, start)
        times: list[datetime] = []
        while moment is not None and moment <= now:
            times.append(moment)
            moment = next_run_after(spec, moment)
        if len(times) >= keep or start == first:
            return times[-keep:]
        window *= 8


def plan_runs(
    spec: ScheduleSpec,
    *,
    next_run_at: datetime,
    now: datetime,
    misfire_policy: str = MISFIRE_RUN_ONCE,
    grace_seconds: float = 60,
    max_catch_up: int = 10,
    expires: datetime | None = None,
) -> RunPlan:
    """What to send for a due row, and its new next run (see the module docstring)."""
    if misfire_policy not in MISFIRE_POLICIES:
        raise ScheduleError(f"misfire policy {misfire_policy!r} is not one of {', '.join(MISFIRE_POLICIES)}")
    if expires is not None and now > expires:
        return RunPlan((), None)
    grace = timedelta(seconds=grace_seconds)
    if isinstance(spec, ClockedSpec):
        if now - next_run_at <= grace or misfire_policy != MISFIRE_SKIP:
            return RunPlan((next_run_at,), None)
        return RunPlan((), None, (next_run_at,))
    if next_run_at > now:
        return RunPlan((), next_run_at)
    try:
        due = _recent_due_times(spec, next_run_at, now, max(1, max_catch_up))
    except OverflowError:
        # Stepping a grid near the year 9999 went past datetime's range: send the run that is due.
        due = [next_run_at]
    following = next_run_after(spec, due[-1])
    send: list[datetime]
    if now - next_run_at <= grace or misfire_policy == MISFIRE_RUN_ALL:
        send = due
    elif misfire_policy == MISFIRE_RUN_ONCE:
        send = due[-1:]
    else:
        send = [moment for moment in due if now - moment <= grace]
    return RunPlan(tuple(send), following, tuple(moment for moment in due if moment not in send))


def upcoming(spec: ScheduleSpec, *, after: datetime, count: int) -> list[datetime]:
    """The next `count` firings strictly after `after`, oldest first (for checks at save time).

    Fewer when the schedule ends: a clocked schedule has one run, and no run lies beyond the
    year 9999. Raises ScheduleError, and nothing else, for a schedule that cannot be used or a
    count outside 0..MAX_UPCOMING.
    """
    validate(spec)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_UPCOMING:
        raise ScheduleError(f"count {count!r} is outside 0..{MAX_UPCOMING}")
    if after.utcoffset() is None:
        raise ScheduleError("after needs a time zone or UTC offset")
    if isinstance(spec, ClockedSpec):
        clocked = spec.clocked_time.astimezone(UTC)
        return [clocked] if count and clocked > after else []
    moments: list[datetime] = []
    moment = next_run_after(spec, after) if count else None
    while moment is not None:
        moments.append(moment)
        moment = next_run_after(spec, moment) if len(moments) < count else None
    return moments
