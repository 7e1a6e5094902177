"""Limits a person can read, and no exception but ScheduleError for a schedule that validates."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from erp.tasks.calendar.schedules import (
    MAX_UPCOMING,
    MISFIRE_POLICIES,
    ClockedSpec,
    CrontabSpec,
    IntervalSpec,
    ScheduleError,
    ScheduleSpec,
    SolarSpec,
    first_run_at,
    next_run_after,
    plan_runs,
    upcoming,
    validate,
)

UTC = UTC


def at(*parts: int, tz: timezone = UTC) -> datetime:
    return datetime(*parts, tzinfo=tz)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            IntervalSpec(3000000, "days"),
            "interval of 3000000 days is longer than the maximum of 36500 days (100 years)",
        ),
        (
            IntervalSpec(876001, "hours"),
            "interval of 876001 hours is longer than the maximum of 876000 hours (100 years)",
        ),
        (IntervalSpec(10**30, "microseconds"), "longer than the maximum of 3153600000000000 microseconds (100 years)"),
        (IntervalSpec(True, "days"), "whole number above 0"),  # type: ignore[arg-type]
        (ClockedSpec(datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))), "beyond the year 9999 in UTC"),
    ],
)
def test_limits_are_refused_with_a_readable_message(spec: ScheduleSpec, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        validate(spec)
    assert message in str(caught.value)


def test_the_longest_interval_passes() -> None:
    validate(IntervalSpec(36500, "days"))
    validate(IntervalSpec(36500 * 86400, "seconds"))


SPECS: list[ScheduleSpec] = [
    IntervalSpec(36500, "days"),
    IntervalSpec(1, "microseconds"),
    IntervalSpec(59, "minutes"),
    CrontabSpec(),
    CrontabSpec(minute="0", hour="*/2", timezone="Pacific/Kiritimati"),  # UTC+14
    CrontabSpec(minute="30", hour="2", timezone="Pacific/Pago_Pago"),  # UTC-11
    CrontabSpec(minute="0", hour="0", day_of_month="29", month_of_year="2", day_of_week="mon"),
    ClockedSpec(at(9999, 12, 31, 23, 59)),
    SolarSpec("sunrise", 52.5, 13.4),
    SolarSpec("solar_noon", -89.9, 179.9),
    SolarSpec("dusk_astronomical", 89.9, -179.9),
]
MOMENTS = [
    at(9000, 1, 1),
    at(9999, 12, 1),
    at(9999, 12, 31, 23, 59),
    datetime.max.replace(tzinfo=UTC),
    at(9999, 12, 31, 20, tz=timezone(timedelta(hours=-14))),
    at(1, 1, 1, 12, tz=timezone(timedelta(hours=14))),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_no_exception_but_schedule_error_up_to_the_end_of_time(spec: ScheduleSpec) -> None:
    validate(spec)
    for moment, other in itertools.product(MOMENTS, (MOMENTS[0], MOMENTS[3])):
        for call in (
            lambda moment=moment: next_run_after(spec, moment),
            lambda moment=moment: first_run_at(spec, now=moment),
            lambda moment=moment, other=other: first_run_at(spec, now=moment, start_time=other),
            lambda moment=moment: upcoming(spec, after=moment, count=3),
            *(
                lambda policy=policy, moment=moment, other=other: plan_runs(
                    spec, next_run_at=min(moment, other), now=max(moment, other), misfire_policy=policy
                )
                for policy in MISFIRE_POLICIES
            ),
        ):
            try:
                result = call()
            except ScheduleError:
                continue
            # Whatever comes back is a real time or None, never one past the end.
            assert result is None or isinstance(result, (datetime, list)) or hasattr(result, "send")


def test_a_run_beyond_the_year_9999_is_none() -> None:
    assert next_run_after(IntervalSpec(36500, "days"), at(9950, 1, 1)) is None
    assert (
        next_run_after(CrontabSpec(minute="0", hour="0", month_of_year="1", day_of_month="1"), at(9999, 6, 1)) is None
    )
    assert next_run_after(SolarSpec("sunrise", 52.5, 13.4), at(9999, 12, 31, 12)) is None
    assert first_run_at(IntervalSpec(36500, "days"), now=at(9999, 1, 1), start_time=at(9950, 1, 1)) is None


def test_a_due_run_near_the_end_is_still_sent_then_the_schedule_ends() -> None:
    plan = plan_runs(IntervalSpec(36500, "days"), next_run_at=at(9950, 1, 1), now=at(9950, 1, 1, 0, 0, 1))
    assert plan.send == (at(9950, 1, 1),) and plan.next_run_at is None


def test_an_interval_start_time_in_the_distant_past_keeps_its_grid_exactly() -> None:
    # A float quotient loses the last microseconds of a grid this long.
    moment = first_run_at(IntervalSpec(7, "microseconds"), now=at(9000, 1, 1), start_time=at(1, 1, 1))
    assert moment is not None and (moment - at(1, 1, 1)) % timedelta(microseconds=7) == timedelta(0)
    assert timedelta(0) <= moment - at(9000, 1, 1) < timedelta(microseconds=7)


def test_upcoming_lists_the_next_runs_strictly_after() -> None:
    spec = CrontabSpec(minute="0", hour="9", day_of_week="mon-fri", timezone="Europe/Berlin")
    runs = upcoming(spec, after=at(2026, 1, 2, 8), count=3)  # Friday 09:00 CET is 08:00 UTC
    assert runs == [at(2026, 1, 5, 8), at(2026, 1, 6, 8), at(2026, 1, 7, 8)]
    assert upcoming(IntervalSpec(10, "minutes"), after=at(2026, 1, 1), count=2) == [
        at(2026, 1, 1, 0, 10),
        at(2026, 1, 1, 0, 20),
    ]
    assert upcoming(ClockedSpec(at(2026, 1, 2)), after=at(2026, 1, 1), count=5) == [at(2026, 1, 2)]
    assert upcoming(ClockedSpec(at(2026, 1, 2)), after=at(2026, 1, 2), count=5) == []
    assert upcoming(spec, after=at(2026, 1, 1), count=0) == []


@pytest.mark.parametrize(
    ("spec", "count", "message"),
    [
        (IntervalSpec(3000000, "days"), 1, "maximum of 36500 days"),
        (CrontabSpec(hour="25"), 1, "hour '25'"),
        (IntervalSpec(1), MAX_UPCOMING + 1, f"outside 0..{MAX_UPCOMING}"),
        (IntervalSpec(1), -1, "outside"),
    ],
)
def test_upcoming_raises_only_schedule_error(spec: ScheduleSpec, count: int, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        upcoming(spec, after=at(2026, 1, 1), count=count)
    assert message in str(caught.value)
