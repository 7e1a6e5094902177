"""The schedule vocabulary, each word defined once: schedule kinds, interval periods, solar
events and misfire policies.

The request schemas use the `Literal` types; the tables' check constraints, the arithmetic and
the scheduler use the tuples derived from them. Adding a kind means a Literal member here, a
spec in erp.tasks.calendar.specs, a table in erp.tasks.scheduler_models and a request schema.
"""

from __future__ import annotations

from typing import Literal, get_args

ScheduleKind = Literal["interval", "crontab", "clocked", "solar"]
SCHEDULE_KINDS: tuple[ScheduleKind, ...] = get_args(ScheduleKind)

IntervalPeriod = Literal["days", "hours", "minutes", "seconds", "microseconds"]
INTERVAL_PERIODS: tuple[IntervalPeriod, ...] = get_args(IntervalPeriod)

SolarEvent = Literal[
    "dawn_astronomical",
    "dawn_nautical",
    "dawn_civil",
    "sunrise",
    "solar_noon",
    "sunset",
    "dusk_civil",
    "dusk_nautical",
    "dusk_astronomical",
]
SOLAR_EVENTS: tuple[SolarEvent, ...] = get_args(SolarEvent)

MisfirePolicy = Literal["run_once", "skip", "run_all"]
MISFIRE_POLICIES: tuple[MisfirePolicy, ...] = get_args(MisfirePolicy)
MISFIRE_RUN_ONCE, MISFIRE_SKIP, MISFIRE_RUN_ALL = MISFIRE_POLICIES


def schedule_column(kind: ScheduleKind) -> str:
    """The periodic_tasks column referring to a schedule of this kind (`interval_id`, ...)."""
    return f"{kind}_id"


SCHEDULE_COLUMNS: tuple[str, ...] = tuple(schedule_column(kind) for kind in SCHEDULE_KINDS)
