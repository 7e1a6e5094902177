"""The four kinds of schedule as values (`IntervalSpec`, `CrontabSpec`, `ClockedSpec`,
`SolarSpec`), and the one rule of an interval: its grid.

A spec is what a schedule says, independent of where it is stored: a table row's columns and a
request's body both become one (`spec_from_fields`). Every datetime is timezone-aware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta
from typing import Any

from erp.tasks.calendar.kinds import INTERVAL_PERIODS, ScheduleKind

# The longest interval accepted. A century is longer than any business rhythm (an interval of
# more is a typing slip, not a plan), and it keeps start + k * interval well inside datetime's
# range (year 9999) for any start of this era.
MAX_INTERVAL_DAYS = 36500
# Microseconds of each interval period.
PERIOD_MICROSECONDS = {
    "days": 86_400_000_000,
    "hours": 3_600_000_000,
    "minutes": 60_000_000,
    "seconds": 1_000_000,
    "microseconds": 1,
}


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


def interval_step(spec: IntervalSpec) -> timedelta:
    """How far apart an interval's slots are; ScheduleError for a period that is not one."""
    if spec.period not in INTERVAL_PERIODS:
        raise ScheduleError(f"interval period {spec.period!r} is not one of {', '.join(INTERVAL_PERIODS)}")
    return timedelta(**{spec.period: spec.every})


def grid_slot(anchor: datetime, step: timedelta, moment: datetime) -> datetime:
    """The first slot at or after `moment` of the grid `anchor + k * step` (k any whole number).

    An interval keeps its grid: the slots of one schedule, whatever asks for them (beat,
    a backfill, "why not", a preview), are those of the grid through a slot it had. Whole
    numbers, not a float quotient: a microsecond grid over centuries needs every digit.
    """
    return anchor - ((anchor - moment) // step) * step
