"""The schedule vocabulary, each word defined once: schedule kinds, interval periods, solar
events and misfire policies.

The request schemas use the `Literal` types; the tables' check constraints, the arithmetic and
the scheduler use the tuples derived from them. Adding a kind means a Literal member here, a
spec in erp.tasks.schedules, a table in erp.tasks.scheduler_models and a request schema.
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

# What to do with an occurrence whose previous occurrence has not finished: send it anyway
# (`allow`), record it as skipped (`skip`), or hold it until the previous one finishes, at most
# one held (`buffer_one`).
OverlapPolicy = Literal["allow", "skip", "buffer_one"]
OVERLAP_POLICIES: tuple[OverlapPolicy, ...] = get_args(OverlapPolicy)

# The life of one occurrence in the run ledger (periodic_task_runs):
#   held -> planned -> sent -> started -> succeeded | failed | retried (-> started ...) | revoked
#   or skipped (with a SkipReason) instead of being sent.
RunState = Literal["held", "planned", "sent", "started", "succeeded", "failed", "retried", "revoked", "skipped"]
RUN_STATES: tuple[RunState, ...] = get_args(RunState)
# States of an occurrence that has not finished (an overlap, a deadline to watch).
UNFINISHED_STATES: tuple[RunState, ...] = ("held", "planned", "sent", "started", "retried")
FINISHED_STATES: tuple[RunState, ...] = ("succeeded", "failed", "revoked", "skipped")

SkipReason = Literal["misfire", "overlap", "paused", "expired"]
SKIP_REASONS: tuple[SkipReason, ...] = get_args(SkipReason)

# Where an occurrence came from: beat's schedule, "run now", or a backfill of a past range.
RunOrigin = Literal["schedule", "manual", "backfill"]
RUN_ORIGINS: tuple[RunOrigin, ...] = get_args(RunOrigin)

AlertKind = Literal["start_deadline_missed", "finish_deadline_missed", "failure", "auto_pause", "stopped_firing"]
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
