"""How many occurrences fall in each minute of a window, across all enabled, not paused schedules,
computed from the definitions (not from the ledger): `GET /api/v1/admin/schedule-load`.

It has to answer in well under a second at 100,000 schedules, so nothing is done per schedule
in Python:
- intervals: PostgreSQL groups them by (step, phase on the grid, bounds); per group the firings
  before a moment x are counted arithmetically (ceil((x - phase) / step)), for every minute
  boundary at once with numpy, so a group costs the same whether it fires once an hour or every
  second;
- crontab and solar schedules: PostgreSQL groups identical definitions (and bounds); each
  distinct definition's firings in the window are walked once (erp.tasks.calendar.schedules, the
  arithmetic beat uses) and counted times the group's size;
- clocked and one-off tasks fire once: PostgreSQL counts them per minute itself.

The forecast is by slot: a schedule with jitter sends each occurrence up to `jitter_seconds`
after the minute shown (hashing every occurrence's offset would cost a hash per occurrence);
the answer says how many schedules have jitter.

Intervals are anchored on their grid (`next_run_at`, else `last_run_at`, else `start_time`), so
a past or future window shows the slots beat fires; `start_time` and `expires` bound every kind.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from erp.tasks.calendar import schedules
from erp.tasks.calendar.specs import PERIOD_MICROSECONDS

logger = logging.getLogger(__name__)

MINUTE_US = 60_000_000
MAX_MINUTES = 1440
# Cells (groups x minute boundaries) numpy works on at a time: a few tens of megabytes.
CHUNK_CELLS = 2_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ACTIVE = "t.enabled AND t.paused_at IS NULL"
# A bound only when it falls inside the window: otherwise NULL, so most rows share a group.
BOUNDS = (
    "CASE WHEN t.start_time > :start THEN t.start_time END AS lower,"
    " CASE WHEN t.expires < :end THEN t.expires END AS upper"
)


class WindowTooLarge(ValueError):
    pass


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(microseconds: int) -> datetime:
    return EPOCH + timedelta(microseconds=microseconds)


def minute_window(start: datetime, end: datetime) -> tuple[datetime, int]:
    """The window as whole minutes: `start` rounded down, `end` rounded up; (first minute, count)."""
    first = to_us(start) // MINUTE_US
    last = -(-to_us(end) // MINUTE_US)
    minutes = last - first
    if minutes > MAX_MINUTES:
        raise WindowTooLarge(
            f"the window spans {minutes} minutes (from rounded down, to rounded up); at most {MAX_MINUTES} (24 hours)"
        )
    return from_us(first * MINUTE_US), max(minutes, 0)


def count_interval_firings(
    start_us: int,
    minutes: int,
    steps: npt.NDArray[np.int64],
    phases: npt.NDArray[np.int64],
    lowers: npt.NDArray[np.int64],
    uppers: npt.NDArray[np.int64],
    weights: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Firings per minute of interval groups: group g fires at phase[g] + k * step[g] (every
    integer k) within [lower[g], upper[g]), `weight[g]` schedules each.

    The firings before x number ceil((x - phase) / step) (up to a constant), so the firings of
    a minute are that count at its end minus at its start, with x clipped into the bounds.
    """
    totals = np.zeros(minutes, dtype=np.int64)
    if minutes == 0 or len(steps) == 0:
        return totals
    boundaries = start_us + MINUTE_US * np.arange(minutes + 1, dtype=np.int64)
    rows = max(1, CHUNK_CELLS // (minutes + 1))
    for index in range(0, len(steps), rows):
        chunk = slice(index, index + rows)
        step = steps[chunk, None]
        phase = phases[chunk, None]
        clipped = np.clip(boundaries[None, :], lowers[chunk, None], uppers[chunk, None])
        before = -((phase - clipped) // step)  # ceil((x - phase) / step), exactly, in integers
        totals += (np.diff(before, axis=1) * weights[chunk, None]).sum(axis=0)
    return totals


def firings_between(spec: schedules.ScheduleSpec, start: datetime, end: datetime) -> list[datetime]:
    """The slots of a crontab or solar schedule in [start, end)."""
    slots = schedules.slots_after(spec, start - timedelta(microseconds=1))
    return list(itertools.takewhile(lambda slot: slot < end, slots))


@dataclass(frozen=True)
class LoadForecast:
    start: datetime
    end: datetime
    per_minute: list[int]
    schedules: int
    jittered_schedules: int
    not_computable: int

    @property
    def total(self) -> int:
        return sum(self.per_minute)

    def minute(self, index: int) -> datetime:
        return self.start + timedelta(minutes=index)

    def busiest(self, top: int) -> list[tuple[datetime, int]]:
        """The `top` busiest minutes with any occurrence, busiest first (earliest first on ties)."""
        order = sorted(
            (index for index, count in enumerate(self.per_minute) if count), key=lambda i: -self.per_minute[i]
        )
        return [(self.minute(index), self.per_minute[index]) for index in order[:top]]


class _Counter:
    """Adds occurrences into the minutes of the window."""

    def __init__(self, start: datetime, minutes: int) -> None:
        self.start = start
        self.start_us = to_us(start)
        self.end = start + timedelta(minutes=minutes)
        self.minutes = minutes
        self.totals = np.zeros(minutes, dtype=np.int64)
        self.not_computable = 0

    def add_times(self, moments: Iterable[datetime], weight: int) -> None:
        for moment in moments:
            index = (to_us(moment) - self.start_us) // MINUTE_US
            if 0 <= index < self.minutes:
                self.totals[index] += weight

    def add_walked_groups(self, groups: Sequence[Any], spec_of: Any) -> None:
        """Groups of identical crontab or solar definitions: each walked once, counted per group."""
        walked: dict[schedules.ScheduleSpec, list[datetime] | None] = {}
        for group in groups:
            spec = spec_of(group)
            if spec not in walked:
                try:
                    schedules.validate(spec)
                    walked[spec] = firings_between(spec, self.start, self.end)
                except (schedules.ScheduleError, OverflowError, ValueError):
                    walked[spec] = None  # a broken row: beat disables it; it fires nothing
            moments = walked[spec]
            if moments is None:
                self.not_computable += group.weight
                continue
            lower, upper = group.lower, group.upper
            self.add_times(
                (m for m in moments if (lower is None or m >= lower) and (upper is None or m <= upper)), group.weight
            )


async def forecast(start: datetime, end: datetime, *, session: AsyncSession) -> LoadForecast:
    """Occurrences per minute in [start, end) rounded to whole minutes (see the module doc)."""
    first, minutes = minute_window(start, end)
    counter = _Counter(first, minutes)
    window = {"start": counter.start, "end": counter.end}

    totals = (
        await session.execute(
            text(
                f"SELECT count(*), count(*) FILTER (WHERE t.jitter_seconds > 0) FROM periodic_tasks AS t WHERE {ACTIVE}"
            )
        )
    ).one()

    # Fire once: one-off tasks at their next run, clocked schedules at their time.
    once = await session.execute(
        text(
            f"""
            SELECT moment, count(*) AS weight FROM (
                SELECT t.next_run_at AS moment FROM periodic_tasks AS t WHERE {ACTIVE} AND t.one_off
                UNION ALL
                SELECT c.clocked_time FROM periodic_tasks AS t JOIN clocked_schedules AS c ON c.id = t.clocked_id
                WHERE {ACTIVE} AND NOT t.one_off AND (t.expires IS NULL OR c.clocked_time <= t.expires)
            ) AS fired
            WHERE moment >= :start AND moment < :end
            GROUP BY moment
            """
        ),
        window,
    )
    for row in once:
        counter.add_times([row.moment], row.weight)

    intervals = (
        await session.execute(
            text(
                f"""
                SELECT step, anchor % step AS phase, lower, upper, count(*) AS weight FROM (
                    SELECT i.every::bigint * CASE i.period {" ".join(f"WHEN '{name}' THEN {us}" for name, us in PERIOD_MICROSECONDS.items())} END AS step,
                        (EXTRACT(EPOCH FROM COALESCE(t.next_run_at, t.last_run_at, t.start_time, :start)) * 1000000)::bigint AS anchor,
                        (EXTRACT(EPOCH FROM CASE WHEN t.start_time > :start THEN t.start_time END) * 1000000)::bigint AS lower,
                        (EXTRACT(EPOCH FROM CASE WHEN t.expires < :end THEN t.expires END) * 1000000)::bigint AS upper
                    FROM periodic_tasks AS t JOIN interval_schedules AS i ON i.id = t.interval_id
                    WHERE {ACTIVE} AND NOT t.one_off
                ) AS grid
                WHERE step > 0
                GROUP BY 1, 2, 3, 4
                """
            ),
            window,
        )
    ).all()
    if intervals:
        start_us, end_us = counter.start_us, to_us(counter.end)
        columns = list(zip(*intervals, strict=True))
        counter.totals += count_interval_firings(
            start_us,
            minutes,
            np.array(columns[0], dtype=np.int64),
            np.array(columns[1], dtype=np.int64),
            np.array([start_us if value is None else max(value, start_us) for value in columns[2]], dtype=np.int64),
            # `expires` is inclusive (a run at that very moment is sent): one microsecond past it.
            np.array([end_us if value is None else min(value + 1, end_us) for value in columns[3]], dtype=np.int64),
            np.array(columns[4], dtype=np.int64),
        )

    crontabs = (
        await session.execute(
            text(
                f"""
                SELECT c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year, c.timezone, {BOUNDS},
                    count(*) AS weight
                FROM periodic_tasks AS t JOIN crontab_schedules AS c ON c.id = t.crontab_id
                WHERE {ACTIVE} AND NOT t.one_off
                GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
                """
            ),
            window,
        )
    ).all()
    # In threads: each distinct definition is walked in Python, CPU work that would hold up
    # every other request on this event loop.
    await asyncio.to_thread(
        counter.add_walked_groups,
        crontabs,
        lambda row: schedules.CrontabSpec(
            row.minute, row.hour, row.day_of_week, row.day_of_month, row.month_of_year, row.timezone
        ),
    )

    solars = (
        await session.execute(
            text(
                f"""
                SELECT s.event, s.latitude, s.longitude, {BOUNDS}, count(*) AS weight
                FROM periodic_tasks AS t JOIN solar_schedules AS s ON s.id = t.solar_id
                WHERE {ACTIVE} AND NOT t.one_off
                GROUP BY 1, 2, 3, 4, 5
                """
            ),
            window,
        )
    ).all()
    await asyncio.to_thread(
        counter.add_walked_groups, solars, lambda row: schedules.SolarSpec(row.event, row.latitude, row.longitude)
    )

    if counter.not_computable:
        logger.warning(
            "schedule load: %d schedule(s) could not be computed and count as firing nothing",
            counter.not_computable,
            extra={"action": "forecast_not_computable"},
        )
    return LoadForecast(
        start=counter.start,
        end=counter.end,
        per_minute=[int(value) for value in counter.totals],
        schedules=int(totals[0]),
        jittered_schedules=int(totals[1]),
        not_computable=counter.not_computable,
    )


# --- the schedules behind one minute of the forecast ----------------------------------------------

MINUTE_SCHEDULES_LIMIT = 100
_EPOCH_US = "(EXTRACT(EPOCH FROM {}) * 1000000)::bigint"


@dataclass(frozen=True)
class DueSchedule:
    id: int
    name: str
    task: str
    scheduled_at: datetime  # its first slot in the minute
    firings: int  # its slots in the minute (more than one only for an interval under a minute)


@dataclass(frozen=True)
class MinuteSchedules:
    minute: datetime
    occurrences: int
    schedules: int
    items: list[DueSchedule]  # the first `limit`, by slot, then name


async def schedules_in_minute(
    moment: datetime, *, session: AsyncSession, limit: int = MINUTE_SCHEDULES_LIMIT
) -> MinuteSchedules:
    """The enabled, not paused schedules with a slot in the minute holding `moment`, by the
    forecast's rules (the same bounds and anchors), so their firings add up to that minute's
    count: the answer to "what is behind this cell of the heatmap?".

    Intervals and fire-once schedules are found by PostgreSQL; each distinct crontab and solar
    definition is walked once for the minute, and the tasks sharing a definition that fires
    are joined to it.
    """
    start, _ = minute_window(moment, moment)
    end = start + timedelta(minutes=1)
    window = {"start": start, "end": end, "start_us": to_us(start), "end_us": to_us(end), "limit": limit}

    crontabs = (
        await session.execute(
            text(
                f"""
                SELECT DISTINCT c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year, c.timezone
                FROM periodic_tasks AS t JOIN crontab_schedules AS c ON c.id = t.crontab_id
                WHERE {ACTIVE} AND NOT t.one_off
                """
            )
        )
    ).all()
    solars = (
        await session.execute(
            text(
                f"""
                SELECT DISTINCT s.event, s.latitude, s.longitude
                FROM periodic_tasks AS t JOIN solar_schedules AS s ON s.id = t.solar_id
                WHERE {ACTIVE} AND NOT t.one_off
                """
            )
        )
    ).all()
    # Walked in a thread, as the forecast walks them: CPU work off the event loop.
    due_crontabs, due_solars = await asyncio.to_thread(
        lambda: (
            _firing_definitions(crontabs, lambda row: schedules.CrontabSpec(*row), start, end),
            _firing_definitions(solars, lambda row: schedules.SolarSpec(*row), start, end),
        )
    )
    columns: list[Sequence[Any]] = list(zip(*due_crontabs, strict=True)) or [()] * 7
    solar_columns: list[Sequence[Any]] = list(zip(*due_solars, strict=True)) or [()] * 4
    window.update(
        {f"c{index}": list(values) for index, values in enumerate(columns)}
        | {f"s{index}": list(values) for index, values in enumerate(solar_columns)}
    )
    steps = " ".join(f"WHEN '{name}' THEN {us}" for name, us in PERIOD_MICROSECONDS.items())
    bounded = "(t.start_time IS NULL OR due.slot >= t.start_time) AND (t.expires IS NULL OR due.slot <= t.expires)"
    rows = (
        await session.execute(
            text(
                f"""
                WITH grid AS (
                    SELECT t.id, {_EPOCH_US.format("COALESCE(t.next_run_at, t.last_run_at, t.start_time, :start)")} AS anchor,
                        i.every::bigint * CASE i.period {steps} END AS step,
                        GREATEST(:start_us, {_EPOCH_US.format("t.start_time")}) AS lower,
                        LEAST(:end_us, {_EPOCH_US.format("t.expires")} + 1) AS upper
                    FROM periodic_tasks AS t JOIN interval_schedules AS i ON i.id = t.interval_id
                    WHERE {ACTIVE} AND NOT t.one_off
                ), counted AS (
                    SELECT id, anchor, step, ceil((lower - anchor)::numeric / step) AS first_k,
                        ceil((upper - anchor)::numeric / step) AS end_k
                    FROM grid WHERE step > 0 AND upper > lower
                ), due AS (
                    SELECT t.id, t.next_run_at AS slot, 1 AS firings FROM periodic_tasks AS t
                    WHERE {ACTIVE} AND t.one_off AND t.next_run_at >= :start AND t.next_run_at < :end
                    UNION ALL
                    SELECT t.id, c.clocked_time, 1
                    FROM periodic_tasks AS t JOIN clocked_schedules AS c ON c.id = t.clocked_id
                    WHERE {ACTIVE} AND NOT t.one_off AND (t.expires IS NULL OR c.clocked_time <= t.expires)
                        AND c.clocked_time >= :start AND c.clocked_time < :end
                    UNION ALL
                    SELECT id, timestamptz 'epoch' + (anchor + first_k::bigint * step) * interval '1 microsecond',
                        (end_k - first_k)::int
                    FROM counted WHERE end_k > first_k
                    UNION ALL
                    SELECT t.id, due.slot, 1
                    FROM periodic_tasks AS t JOIN crontab_schedules AS c ON c.id = t.crontab_id
                    JOIN unnest(CAST(:c0 AS text[]), CAST(:c1 AS text[]), CAST(:c2 AS text[]), CAST(:c3 AS text[]),
                        CAST(:c4 AS text[]), CAST(:c5 AS text[]), CAST(:c6 AS timestamptz[]))
                        AS due(minute, hour, day_of_week, day_of_month, month_of_year, timezone, slot)
                        ON (c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year, c.timezone)
                        = (due.minute, due.hour, due.day_of_week, due.day_of_month, due.month_of_year, due.timezone)
                    WHERE {ACTIVE} AND NOT t.one_off AND {bounded}
                    UNION ALL
                    SELECT t.id, due.slot, 1
                    FROM periodic_tasks AS t JOIN solar_schedules AS s ON s.id = t.solar_id
                    JOIN unnest(CAST(:s0 AS text[]), CAST(:s1 AS float8[]), CAST(:s2 AS float8[]),
                        CAST(:s3 AS timestamptz[])) AS due(event, latitude, longitude, slot)
                        ON (s.event, s.latitude, s.longitude) = (due.event, due.latitude, due.longitude)
                    WHERE {ACTIVE} AND NOT t.one_off AND {bounded}
                )
                SELECT t.id, t.name, t.task, due.slot, due.firings,
                    count(*) OVER () AS schedules, sum(due.firings) OVER () AS occurrences
                FROM due JOIN periodic_tasks AS t ON t.id = due.id
                ORDER BY due.slot, t.name, t.id
                LIMIT :limit
                """
            ),
            window,
        )
    ).all()
    return MinuteSchedules(
        minute=start,
        occurrences=int(rows[0].occurrences) if rows else 0,
        schedules=int(rows[0].schedules) if rows else 0,
        items=[DueSchedule(row.id, row.name, row.task, row.slot, row.firings) for row in rows],
    )


def _firing_definitions(
    definitions: Sequence[Any], spec_of: Any, start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    """The definitions with a slot in [start, end), each with that slot (a broken one fires nothing)."""
    firing = []
    for definition in definitions:
        try:
            spec = spec_of(definition)
            schedules.validate(spec)
            slots = firings_between(spec, start, end)
        except (schedules.ScheduleError, OverflowError, ValueError):
            continue
        if slots:
            firing.append((*definition, slots[0]))
    return firing
