"""A schedule in words: "every day at 02:30 Europe/Berlin", "every 15 minutes".

Operators read schedules in the console, where a crontab's five fields are a puzzle and an
interval of 900 seconds is a sum. `describe` says what a schedule does in one short English
phrase. It covers the shapes people write (a time of day, a step, weekdays, days of the month,
lists of a few values) and falls back to the fields themselves, never to a guess: a phrase
that is wrong is worse than a cron line. Pure: no clock, no database.

Crontab fields are read as the calendar reads them (Celery's parser: names of days, ranges,
lists, steps), days of the week 0-6 with Sunday 0; the zone is named whenever the hours or days
are constrained, because then the zone decides when it fires.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC

from celery.schedules import crontab_parser

from erp.tasks.calendar.specs import ClockedSpec, CrontabSpec, IntervalSpec, ScheduleSpec, SolarSpec

WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Interval periods in the singular, for "every minute" and "every 2 minutes".
_SINGULAR = {"days": "day", "hours": "hour", "minutes": "minute", "seconds": "second", "microseconds": "microsecond"}
_SOLAR_WORDS = {
    "dawn_astronomical": "astronomical dawn",
    "dawn_nautical": "nautical dawn",
    "dawn_civil": "civil dawn",
    "sunrise": "sunrise",
    "solar_noon": "solar noon",
    "sunset": "sunset",
    "dusk_civil": "civil dusk",
    "dusk_nautical": "nautical dusk",
    "dusk_astronomical": "astronomical dusk",
}
# More wall times than this are not listed one by one ("at 09:00, 12:00 and 17:00").
_MAX_LISTED_TIMES = 4
_STEP = re.compile(r"^\*/(\d+)$")


class _Unsayable(Exception):
    """A field this module has no words for: the fields are shown as they are."""


def describe(spec: ScheduleSpec) -> str:
    """The schedule in one English phrase."""
    if isinstance(spec, IntervalSpec):
        return describe_interval(spec)
    if isinstance(spec, CrontabSpec):
        return describe_crontab(spec)
    if isinstance(spec, ClockedSpec):
        return f"once, at {spec.clocked_time.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if isinstance(spec, SolarSpec):
        return describe_solar(spec)
    raise TypeError(f"not a schedule spec: {spec!r}")


def describe_interval(spec: IntervalSpec) -> str:
    unit = _SINGULAR.get(spec.period, spec.period)
    return f"every {unit}" if spec.every == 1 else f"every {spec.every} {unit}s"


def describe_solar(spec: SolarSpec) -> str:
    event = _SOLAR_WORDS.get(spec.event, spec.event.replace("_", " "))
    north_south = "N" if spec.latitude >= 0 else "S"
    east_west = "E" if spec.longitude >= 0 else "W"
    return f"every day at {event} ({abs(spec.latitude):.2f}° {north_south}, {abs(spec.longitude):.2f}° {east_west})"


def describe_crontab(spec: CrontabSpec) -> str:
    fields = (spec.minute, spec.hour, spec.day_of_month, spec.month_of_year, spec.day_of_week)
    minute, hour, day_of_month, month, day_of_week = (str(field).strip() for field in fields)
    try:
        times = _times(minute, hour)
        days = _days(day_of_month, month, day_of_week)
    except _Unsayable:
        return f"cron {minute} {hour} {day_of_month} {month} {day_of_week} ({spec.timezone})"
    if hour == "*" and days is None:
        return times  # a rhythm within every hour of every day: the zone changes nothing
    if times.startswith("at "):
        phrase = f"{days or 'every day'} {times}"
    else:
        phrase = times if days is None else f"{times}, {days}"
    return f"{phrase} {spec.timezone}"


def _values(text: str, max_value: int, min_value: int = 0) -> list[int]:
    try:
        values: set[int] = crontab_parser(max_value, min_value).parse(text)
    except Exception:  # the parser's ValueError, KeyError or ParseException
        raise _Unsayable(text) from None
    if not values:
        raise _Unsayable(text)
    return sorted(values)


def _step(text: str) -> int | None:
    match = _STEP.match(text)
    return int(match.group(1)) if match else None


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _times(minute: str, hour: str) -> str:
    """The time-of-day part: "every 15 minutes", "at 02:30", "every 2 hours at minute 0"."""
    minute_step = _step(minute)
    if minute == "*":
        every_minute = "every minute"
        if hour == "*":
            return every_minute
        return f"{every_minute} {_hours_phrase(hour)}"
    if minute_step is not None:
        rhythm = f"every {minute_step} minutes" if minute_step > 1 else "every minute"
        return rhythm if hour == "*" else f"{rhythm} {_hours_phrase(hour)}"
    minutes = _values(minute, 60)
    if hour == "*":
        if minutes == [0]:
            return "every hour, on the hour"
        return f"every hour at minute{'s' if len(minutes) > 1 else ''} {_join([str(m) for m in minutes])}"
    hour_step = _step(hour)
    if hour_step is not None:
        at = f"minute{'s' if len(minutes) > 1 else ''} {_join([str(m) for m in minutes])}"
        return f"every {hour_step} hours at {at}" if hour_step > 1 else f"every hour at {at}"
    hours = _values(hour, 24)
    if len(hours) * len(minutes) <= _MAX_LISTED_TIMES:
        return "at " + _join([f"{h:02d}:{m:02d}" for h in hours for m in minutes])
    at = f"minute{'s' if len(minutes) > 1 else ''} {_join([str(m) for m in minutes])}"
    return f"every hour at {at} {_hours_phrase(hour)}"


def _hours_phrase(hour: str) -> str:
    """Which hours a rhythm runs in: "every 2 hours", "from 09:00 to 17:59", "in hours 8 and 20"."""
    step = _step(hour)
    if step is not None:
        return f"of every {step} hours" if step > 1 else "of every hour"
    hours = _values(hour, 24)
    if len(hours) > 1 and hours == list(range(hours[0], hours[-1] + 1)):
        return f"from {hours[0]:02d}:00 to {hours[-1]:02d}:59"
    if len(hours) == 1:
        return f"from {hours[0]:02d}:00 to {hours[0]:02d}:59"
    return f"in hours {_join([str(h) for h in hours])}"


def _days(day_of_month: str, month: str, day_of_week: str) -> str | None:
    """The days part ("every Monday", "Monday to Friday", "on day 1 of every month"), None for
    every day. Celery's rule: a day fires when its month, day of month and weekday all match."""
    weekdays = None if day_of_week == "*" else _values(day_of_week, 7)
    month_days = None if day_of_month == "*" else _values(day_of_month, 31, 1)
    months = None if month == "*" else _values(month, 12, 1)
    if weekdays == list(range(7)):
        weekdays = None
    parts: list[str] = []
    if month_days is not None:
        days = _join([str(day) for day in month_days])
        parts.append(f"on day{'s' if len(month_days) > 1 else ''} {days}")
        parts.append("of every month" if months is None else "in " + _join([MONTHS[m - 1] for m in months]))
        if weekdays is not None:
            parts.append(f"when it is a {_weekdays_or(weekdays)}")
        return " ".join(parts)
    if weekdays is not None:
        parts.append(_weekdays_phrase(weekdays))
    if months is not None:
        parts.append(("every day in " if weekdays is None else "in ") + _join([MONTHS[m - 1] for m in months]))
    return " ".join(parts) if parts else None


def _weekdays_phrase(weekdays: list[int]) -> str:
    if weekdays == [1, 2, 3, 4, 5]:
        return "Monday to Friday"
    if weekdays == [0, 6]:
        return "on Saturday and Sunday"
    if len(weekdays) == 1:
        return f"every {WEEKDAYS[weekdays[0]]}"
    # Monday first, as people list a week; Sunday (0) last.
    ordered = sorted(weekdays, key=lambda day: (day == 0, day))
    return "on " + _join([WEEKDAYS[day] for day in ordered])


def _weekdays_or(weekdays: list[int]) -> str:
    ordered = sorted(weekdays, key=lambda day: (day == 0, day))
    names = [WEEKDAYS[day] for day in ordered]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
