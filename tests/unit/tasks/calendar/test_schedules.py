"""Schedule arithmetic with a controllable clock: every function takes `now` as an argument."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import ephem
import pytest

from erp.tasks.calendar.schedules import (
    MISFIRE_RUN_ALL,
    MISFIRE_RUN_ONCE,
    MISFIRE_SKIP,
    ClockedSpec,
    CrontabSpec,
    IntervalSpec,
    ScheduleError,
    SolarSpec,
    first_run_at,
    next_run_after,
    plan_runs,
    upcoming,
    validate,
)

UTC = UTC


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def firings(spec, start: datetime, end: datetime) -> list[datetime]:
    moments, moment = [], next_run_after(spec, start)
    while moment is not None and moment < end:
        moments.append(moment)
        moment = next_run_after(spec, moment)
    return moments


# --- interval -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "step"),
    [
        ("days", timedelta(days=2)),
        ("hours", timedelta(hours=2)),
        ("seconds", timedelta(seconds=2)),
        ("microseconds", timedelta(microseconds=2)),
    ],
)
def test_interval_steps_by_its_period(period, step):
    assert next_run_after(IntervalSpec(2, period), at(2026, 1, 1)) == at(2026, 1, 1) + step


def test_interval_runs_at_once_or_at_its_start_time():
    now = at(2026, 1, 1, 12)
    assert first_run_at(IntervalSpec(10), now=now) == now
    assert first_run_at(IntervalSpec(10), now=now, start_time=at(2026, 1, 2)) == at(2026, 1, 2)


def test_interval_start_time_in_the_past_keeps_its_grid():
    assert first_run_at(IntervalSpec(1, "hours"), now=at(2026, 1, 1, 12, 10), start_time=at(2026, 1, 1, 9, 30)) == at(
        2026, 1, 1, 12, 30
    )


# --- crontab ------------------------------------------------------------------------------------


def test_crontab_every_fifteen_minutes_in_utc():
    spec = CrontabSpec(minute="*/15")
    assert firings(spec, at(2026, 5, 1, 10, 7), at(2026, 5, 1, 11, 1)) == [
        at(2026, 5, 1, 10, 15),
        at(2026, 5, 1, 10, 30),
        at(2026, 5, 1, 10, 45),
        at(2026, 5, 1, 11, 0),
    ]


def test_crontab_monday_only_with_named_day():
    spec = CrontabSpec(minute="0", hour="9", day_of_week="mon")
    moments = firings(spec, at(2026, 6, 1), at(2026, 7, 1))
    assert [moment.weekday() for moment in moments] == [0] * 5
    assert moments[0] == at(2026, 6, 1, 9)


def test_crontab_day_of_month_and_month_ranges():
    spec = CrontabSpec(minute="0", hour="0", day_of_month="28-31", month_of_year="2")
    assert firings(spec, at(2027, 1, 1), at(2027, 12, 31)) == [at(2027, 2, 28)]
    assert firings(spec, at(2028, 1, 1), at(2028, 12, 31)) == [at(2028, 2, 28), at(2028, 2, 29)]


def test_a_leap_day_on_a_weekday_fires_again_after_a_century_without_its_leap_year():
    """Feb 29 is a Thursday in 2052 and 2080; 2100 is no leap year, so the next is 2120, forty
    years on (Celery 5.3 and croniter agree). A search that gives up sooner calls the schedule
    finished after 2080, and a preview shows too few runs."""
    spec = CrontabSpec(minute="29", hour="0", day_of_month="29", month_of_year="2", day_of_week="thu")
    assert next_run_after(spec, at(2080, 2, 29, 0, 29)) == at(2120, 2, 29, 0, 29)
    expected = [at(year, 2, 29, 0, 29) for year in (2052, 2080, 2120, 2148)]
    assert upcoming(spec, after=at(2026, 1, 1), count=4) == expected


def test_crontab_is_read_in_its_own_zone():
    spec = CrontabSpec(minute="0", hour="9", timezone="Asia/Tokyo")
    assert next_run_after(spec, at(2025, 12, 31, 12)) == at(2026, 1, 1, 0)  # 09:00 JST


def test_crontab_first_run_is_at_or_after_start_time():
    spec = CrontabSpec(minute="0", hour="*/6")
    assert first_run_at(spec, now=at(2026, 1, 1, 1), start_time=at(2026, 3, 1, 6)) == at(2026, 3, 1, 6)
    assert first_run_at(spec, now=at(2026, 1, 1, 6)) == at(2026, 1, 1, 6)


# Spring-forward and fall-back days: two northern zones (different rules and hours) and a
# southern one, whose DST starts in October and ends in April.
DST_DAYS = [
    ("Europe/Berlin", date(2026, 3, 29), date(2026, 10, 25)),
    ("America/New_York", date(2026, 3, 8), date(2026, 11, 1)),
    ("Australia/Sydney", date(2026, 10, 4), date(2026, 4, 5)),
]


def local_dates(moments, zone: str) -> Counter:
    return Counter(moment.astimezone(ZoneInfo(zone)).date() for moment in moments)


@pytest.mark.parametrize(("zone", "spring", "autumn"), DST_DAYS)
@pytest.mark.parametrize("wall", ["02:30", "01:30", "03:00"])
def test_a_daily_job_runs_exactly_once_on_both_transition_days(zone, spring, autumn, wall):
    hour, minute = (int(part) for part in wall.split(":"))
    spec = CrontabSpec(minute=str(minute), hour=str(hour), timezone=zone)
    for day in (spring, autumn):
        start = datetime.combine(day - timedelta(days=3), datetime.min.time(), UTC)
        moments = firings(spec, start, start + timedelta(days=7))
        counts = local_dates(moments, zone)
        assert all(counts[day - timedelta(days=offset)] == 1 for offset in range(-2, 3)), (zone, day, counts)
        assert moments == sorted(set(moments)), "strictly increasing, no duplicate instants"


def test_a_missing_wall_time_fires_shifted_forward_by_the_gap():
    moment = next_run_after(CrontabSpec(minute="30", hour="2", timezone="Europe/Berlin"), at(2026, 3, 29))
    assert moment == at(2026, 3, 29, 1, 30)
    assert moment.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M %Z") == "03:30 CEST"


def test_a_repeated_wall_time_fires_at_its_first_occurrence():
    moment = next_run_after(CrontabSpec(minute="30", hour="2", timezone="Europe/Berlin"), at(2026, 10, 25))
    assert moment == at(2026, 10, 25, 0, 30)  # 02:30 CEST, not 02:30 CET an hour later


@pytest.mark.parametrize(("zone", "spring", "autumn"), DST_DAYS)
def test_every_fifteen_minutes_across_both_transitions(zone, spring, autumn):
    spec = CrontabSpec(minute="*/15", timezone=zone)
    for day, real_hours in ((spring, 23), (autumn, 25)):
        tz = ZoneInfo(zone)
        start = datetime.combine(day, datetime.min.time(), tz).astimezone(UTC) - timedelta(microseconds=1)
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).astimezone(UTC)
        moments = firings(spec, start, end)
        assert moments == sorted(set(moments))
        # A wildcard hour fires at every real instant whose wall time matches: every real
        # quarter hour, so 25 h of them in autumn (the repeated hour twice, which Celery and
        # the earlier rule skipped, leaving an hour-long hole) and 23 h in spring.
        assert len(moments) == real_hours * 4, (zone, day, len(moments))


def test_an_hourly_job_across_the_repeated_hour_fires_at_each_real_hour():
    # An hourly job is a rhythm: the repeated 01:00 fires twice, as EDT and as EST.
    spec = CrontabSpec(minute="0", timezone="America/New_York")
    tz = ZoneInfo("America/New_York")
    start = datetime(2026, 11, 1, 0, 30, tzinfo=tz).astimezone(UTC)
    moments = firings(spec, start, start + timedelta(hours=4))
    assert [moment.astimezone(tz).strftime("%H:%M %Z") for moment in moments] == [
        "01:00 EDT",
        "01:00 EST",
        "02:00 EST",
        "03:00 EST",
    ]


def test_chained_firings_over_a_year_never_repeat_an_instant():
    spec = CrontabSpec(minute="0,30", hour="0-3", timezone="Australia/Lord_Howe")  # a 30-minute DST shift
    moments = firings(spec, at(2026, 1, 1), at(2027, 1, 1))
    assert moments == sorted(set(moments))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (CrontabSpec(minute="61"), "minute '61'"),
        (CrontabSpec(hour="24"), "hour '24'"),
        (CrontabSpec(day_of_week="funday"), "day_of_week 'funday'"),
        (CrontabSpec(month_of_year="13"), "month_of_year '13'"),
        (CrontabSpec(timezone="Mars/Olympus"), "'Mars/Olympus' is not an IANA time zone"),
        (CrontabSpec(day_of_month="31", month_of_year="2"), "never fall on the same day"),
        (IntervalSpec(0), "above 0"),
        (IntervalSpec(5, "weeks"), "period 'weeks'"),
        (SolarSpec("noonish", 0, 0), "solar event 'noonish'"),
        (SolarSpec("sunrise", 91, 0), "latitude 91"),
        (ClockedSpec(datetime(2030, 1, 1)), "time zone"),
    ],
)
def test_invalid_schedules_say_what_is_wrong(spec, fragment):
    with pytest.raises(ScheduleError) as caught:
        validate(spec)
    assert fragment in str(caught.value)


def test_valid_schedules_pass_validation():
    for spec in (
        CrontabSpec(minute="0", hour="9", day_of_week="mon-fri", timezone="Europe/Berlin"),
        CrontabSpec(day_of_month="29", month_of_year="2", day_of_week="mon"),
        IntervalSpec(1, "microseconds"),
        SolarSpec("sunset", -33.9, 151.2),
        ClockedSpec(at(2030, 1, 1)),
    ):
        validate(spec)


# --- clocked and solar --------------------------------------------------------------------------


def test_clocked_fires_once_even_if_its_time_has_passed():
    spec = ClockedSpec(at(2026, 1, 1, 9))
    assert first_run_at(spec, now=at(2026, 2, 1)) == at(2026, 1, 1, 9)
    assert next_run_after(spec, at(2026, 1, 1, 9)) is None
    assert plan_runs(spec, next_run_at=at(2026, 1, 1, 9), now=at(2026, 1, 1, 9, 0, 1)).next_run_at is None


def test_sunrise_matches_an_independent_ephem_computation():
    observer = ephem.Observer()
    observer.lat, observer.lon, observer.pressure, observer.horizon = "52.52", "13.405", 0, "-0:34"
    observer.date = ephem.Date(datetime(2026, 6, 21))
    expected = observer.next_rising(ephem.Sun()).datetime().replace(tzinfo=UTC)
    moment = next_run_after(SolarSpec("sunrise", 52.52, 13.405), at(2026, 6, 21))
    assert abs(moment - expected) < timedelta(seconds=1)
    assert moment.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H") == "04"  # Berlin's midsummer dawn


def test_solar_events_in_polar_day_skip_to_when_they_happen_again():
    moment = next_run_after(SolarSpec("sunset", 78.22, 15.65), at(2026, 6, 1))  # Svalbard: midnight sun
    assert at(2026, 8, 1) < moment < at(2026, 9, 15)


# --- misfires and expiry ------------------------------------------------------------------------

EVERY_MINUTE = IntervalSpec(1, "minutes")


def test_a_run_late_within_grace_is_on_time():
    plan = plan_runs(
        EVERY_MINUTE, next_run_at=at(2026, 1, 1, 12), now=at(2026, 1, 1, 12, 0, 30), misfire_policy=MISFIRE_SKIP
    )
    assert plan.send == (at(2026, 1, 1, 12),)
    assert plan.next_run_at == at(2026, 1, 1, 12, 1)


@pytest.mark.parametrize(
    ("policy", "expected_send"),
    [
        (MISFIRE_RUN_ONCE, (at(2026, 1, 1, 12, 10),)),
        (MISFIRE_SKIP, ()),
        (MISFIRE_RUN_ALL, (at(2026, 1, 1, 12, 8), at(2026, 1, 1, 12, 9), at(2026, 1, 1, 12, 10))),
    ],
)
def test_each_misfire_policy_after_downtime(policy, expected_send):
    plan = plan_runs(
        EVERY_MINUTE,
        next_run_at=at(2026, 1, 1, 12),
        now=at(2026, 1, 1, 12, 10, 5),
        misfire_policy=policy,
        grace_seconds=2,
        max_catch_up=3,
    )
    assert plan.send == expected_send
    assert plan.next_run_at == at(2026, 1, 1, 12, 11), "continues on the original grid"


def test_skip_still_sends_a_due_time_inside_the_grace_window():
    plan = plan_runs(
        EVERY_MINUTE,
        next_run_at=at(2026, 1, 1, 12),
        now=at(2026, 1, 1, 12, 10, 5),
        misfire_policy=MISFIRE_SKIP,
        grace_seconds=10,
    )
    assert plan.send == (at(2026, 1, 1, 12, 10),)


def test_a_tiny_interval_after_a_long_outage_sends_at_most_the_cap():
    # 2.6 million missed seconds: computed, not walked.
    plan = plan_runs(
        IntervalSpec(1),
        next_run_at=at(2026, 1, 1),
        now=at(2026, 1, 31),
        misfire_policy=MISFIRE_RUN_ALL,
        max_catch_up=10,
    )
    assert len(plan.send) == 10 and plan.send[-1] == at(2026, 1, 31)
    assert plan.next_run_at == at(2026, 1, 31, 0, 0, 1)


def test_a_per_minute_crontab_after_a_month_down_sends_only_the_most_recent():
    spec = CrontabSpec(minute="*")
    plan = plan_runs(
        spec, next_run_at=at(2026, 1, 1), now=at(2026, 2, 1, 0, 0, 30), misfire_policy=MISFIRE_RUN_ALL, max_catch_up=4
    )
    assert plan.send == (at(2026, 1, 31, 23, 57), at(2026, 1, 31, 23, 58), at(2026, 1, 31, 23, 59), at(2026, 2, 1))
    assert plan.next_run_at == at(2026, 2, 1, 0, 1)


def test_nothing_is_sent_after_expiry():
    plan = plan_runs(
        EVERY_MINUTE, next_run_at=at(2026, 1, 1, 12), now=at(2026, 1, 1, 12, 0, 1), expires=at(2026, 1, 1, 11)
    )
    assert plan == plan_runs(
        EVERY_MINUTE, next_run_at=at(2026, 1, 1, 12), now=at(2026, 1, 1, 13), expires=at(2026, 1, 1, 12, 30)
    )
    assert plan.send == () and plan.next_run_at is None
