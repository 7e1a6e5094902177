"""Schedule arithmetic: when does a schedule fire? Pure functions, no clock of their own.

The public questions are here: is a schedule usable (`validate`), when does it fire next
(`next_run_after`, `first_run_at`), which slots follow a moment (`slots_after`, the one walk
over a schedule's slots), when a slot is sent (`jitter_offset`), and what a due row sends
(`plan_runs`). The spec types are
erp.tasks.calendar.specs (imported from here too), the crontab and its DST rules
erp.tasks.calendar.crontab, the solar search erp.tasks.calendar.solar.

Every datetime in and out is timezone-aware; results are UTC. The caller passes `now`, so
tests control time by arguments.

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

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from erp.tasks.calendar import solar
from erp.tasks.calendar.crontab import check_crontab, crontab_after
from erp.tasks.calendar.kinds import (
    INTERVAL_PERIODS,
    MISFIRE_POLICIES,
    MISFIRE_RUN_ALL,
    MISFIRE_RUN_ONCE,
    MISFIRE_SKIP,
    SOLAR_EVENTS,
)
from erp.tasks.calendar.specs import (
    MAX_INTERVAL_DAYS,
    PERIOD_MICROSECONDS,
    SPEC_TYPES,
    ClockedSpec,
    CrontabSpec,
    IntervalSpec,
    ScheduleError,
    ScheduleSpec,
    SolarSpec,
    grid_slot,
    interval_step,
    spec_from_fields,
)

__all__ = [
    "MAX_INTERVAL_DAYS",
    "MAX_UPCOMING",
    "MISFIRE_RUN_ALL",
    "MISFIRE_RUN_ONCE",
    "MISFIRE_SKIP",
    "SOLAR_EVENTS",
    "SPEC_TYPES",
    "ClockedSpec",
    "CrontabSpec",
    "IntervalSpec",
    "RunPlan",
    "ScheduleError",
    "ScheduleSpec",
    "SolarSpec",
    "first_run_at",
    "grid_slot",
    "interval_step",
    "jitter_offset",
    "next_run_after",
    "plan_runs",
    "slots_after",
    "spec_from_fields",
    "upcoming",
    "validate",
]

# How many runs `upcoming` computes at most: a preview, not a walk over every microsecond.
MAX_UPCOMING = 1000


@dataclass(frozen=True)
class RunPlan:
    send: tuple[datetime, ...]
    next_run_at: datetime | None
    # Due times the misfire policy did not send (at most max_catch_up of the most recent), for
    # the run ledger to record as skipped.
    missed: tuple[datetime, ...] = ()


def validate(spec: ScheduleSpec) -> None:
    """Raise ScheduleError, saying what is wrong, unless the schedule can fire."""
    if isinstance(spec, IntervalSpec):
        if spec.period not in INTERVAL_PERIODS:
            raise ScheduleError(f"interval period {spec.period!r} is not one of {', '.join(INTERVAL_PERIODS)}")
        if not isinstance(spec.every, int) or isinstance(spec.every, bool) or spec.every <= 0:
            raise ScheduleError(f"interval every must be a whole number above 0, got {spec.every!r}")
        unit = PERIOD_MICROSECONDS[spec.period]
        if spec.every * unit > MAX_INTERVAL_DAYS * PERIOD_MICROSECONDS["days"]:
            limit = MAX_INTERVAL_DAYS * PERIOD_MICROSECONDS["days"] // unit
            raise ScheduleError(
                f"interval of {spec.every} {spec.period} is longer than the maximum of {limit} {spec.period} "
                f"({MAX_INTERVAL_DAYS // 365} years)"
            )
    elif isinstance(spec, CrontabSpec):
        check_crontab(spec)
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
        return scheduled_at.astimezone(UTC) + interval_step(spec)
    if isinstance(spec, CrontabSpec):
        return crontab_after(spec, scheduled_at.astimezone(UTC))
    if isinstance(spec, ClockedSpec):
        return None
    if isinstance(spec, SolarSpec):
        return solar.next_event(spec.event, spec.latitude, spec.longitude, scheduled_at.astimezone(UTC))
    raise ScheduleError(f"unknown schedule type {type(spec).__name__}")


def slots_after(spec: ScheduleSpec, moment: datetime) -> Iterator[datetime]:
    """The slots of a schedule strictly after `moment`, oldest first, each the next_run_after of
    the one before, until the schedule ends (or the year 9999 does).

    The one walk over a schedule's slots: the preview, a backfill, "why not" and the load
    forecast take theirs from here, bounded as each needs. An interval steps from `moment`
    itself: start from a slot of its grid (grid_slot) to stay on the grid.
    """
    slot = next_run_after(spec, moment)
    while slot is not None:
        yield slot
        slot = next_run_after(spec, slot)


def jitter_offset(periodic_task_id: int, scheduled_at: datetime, jitter_seconds: int) -> timedelta:
    """A stable offset in [0, jitter_seconds) for one slot: every beat computes the same one."""
    if jitter_seconds <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{periodic_task_id}@{scheduled_at.isoformat()}".encode()).digest()
    microseconds = int.from_bytes(digest[:8], "big") % (jitter_seconds * 1_000_000)
    return timedelta(microseconds=microseconds)


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
        return grid_slot(start_time, interval_step(spec), now).astimezone(UTC)
    earliest = max(now, start_time) if start_time else now
    return next_run_after(spec, earliest - timedelta(microseconds=1))


def _recent_due_times(spec: ScheduleSpec, first: datetime, now: datetime, keep: int) -> list[datetime]:
    """The last `keep` scheduled times in [first, now], oldest first, without walking them all."""
    if isinstance(spec, IntervalSpec):
        step = interval_step(spec)
        count = (now - first) // step + 1
        return [first + index * step for index in range(max(0, count - keep), count)]
    # Crontab and solar cannot be stepped backwards: walk forward from a point near `now`,
    # going further back only while that finds fewer than `keep` times.
    window = timedelta(hours=1)
    while True:
        start = first if now - first <= window else now - window
        candidates = itertools.chain([first], slots_after(spec, first)) if start == first else slots_after(spec, start)
        times = list(itertools.takewhile(lambda moment: moment <= now, candidates))
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


def slots_from(
    spec: ScheduleSpec, first: datetime, count: int, *, one_off: bool = False, expires: datetime | None = None
) -> list[datetime]:
    """The first `count` slots of a task whose next run is `first`: that run only for a
    one-off task, none after `expires` (a run at that very moment is sent). Raises
    OverflowError for runs past the year 9999."""
    slots = [first] if one_off else itertools.chain([first], slots_after(spec, first))
    unexpired = itertools.takewhile(lambda slot: expires is None or slot <= expires, slots)
    return list(itertools.islice(unexpired, count))


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
    return list(itertools.islice(slots_after(spec, after), count))
