"""Crontab across daylight saving time: wildcard and step hours follow real time, fixed hours the wall clock."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from erp.tasks.calendar.schedules import CrontabSpec, ScheduleSpec, next_run_after

UTC = UTC


def firings(spec: ScheduleSpec, start: datetime, end: datetime) -> list[datetime]:
    moments: list[datetime] = []
    moment = next_run_after(spec, start)
    while moment is not None and moment < end:
        moments.append(moment)
        moment = next_run_after(spec, moment)
    return moments


def local_day(day: date, zone: str) -> tuple[datetime, datetime]:
    """The real instants that bound a local calendar day (just before its start, its end)."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, datetime.min.time(), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).astimezone(UTC)
    return start - timedelta(microseconds=1), end


@pytest.mark.parametrize(
    ("zone", "day", "runs"),
    [
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("Australia/Sydney", date(2026, 4, 5), 25),
        ("Australia/Sydney", date(2026, 10, 4), 23),
    ],
)
def test_an_hourly_wildcard_job_fires_at_every_real_hour_of_a_dst_day(zone: str, day: date, runs: int) -> None:
    # celery#10107: Celery fires 24 times on a fall-back day, skipping the second 02:00.
    moments = firings(CrontabSpec(minute="0", hour="*", timezone=zone), *local_day(day, zone))
    assert len(moments) == runs
    assert moments == sorted(set(moments))
    assert all(later - earlier == timedelta(hours=1) for earlier, later in itertools.pairwise(moments))


def test_the_repeated_hour_fires_twice_for_a_wildcard_hour() -> None:
    tz = ZoneInfo("Europe/Berlin")
    moments = firings(
        CrontabSpec(minute="0,30", hour="*", timezone="Europe/Berlin"), *local_day(date(2026, 10, 25), "Europe/Berlin")
    )
    walls = [moment.astimezone(tz).strftime("%H:%M %Z") for moment in moments[3:9]]
    assert walls == ["01:30 CEST", "02:00 CEST", "02:30 CEST", "02:00 CET", "02:30 CET", "03:00 CET"]


def test_a_step_hour_counts_as_a_wildcard() -> None:
    # 0, 2, 4, ... local: on the fall-back day 02:00 happens twice, so 13 runs.
    moments = firings(
        CrontabSpec(minute="0", hour="*/2", timezone="Europe/Berlin"), *local_day(date(2026, 10, 25), "Europe/Berlin")
    )
    assert len(moments) == 13
    # 1-23/3 (1, 4, 7, ...) on the spring-forward day in New York: 01:00, 04:00 ... all exist.
    moments = firings(
        CrontabSpec(minute="0", hour="1-23/3", timezone="America/New_York"),
        *local_day(date(2026, 3, 8), "America/New_York"),
    )
    assert len(moments) == 8


def test_a_wildcard_hour_skips_wall_times_that_do_not_exist() -> None:
    tz = ZoneInfo("Europe/Berlin")
    moments = firings(
        CrontabSpec(minute="30", hour="*", timezone="Europe/Berlin"), *local_day(date(2026, 3, 29), "Europe/Berlin")
    )
    assert [moment.astimezone(tz).strftime("%H:%M") for moment in moments[:3]] == ["00:30", "01:30", "03:30"]


@pytest.mark.parametrize("hour", ["2", "1-3", "2,14"])
def test_a_fixed_hour_still_fires_once_on_a_fall_back_day(hour: str) -> None:
    tz = ZoneInfo("Europe/Berlin")
    moments = firings(
        CrontabSpec(minute="30", hour=hour, timezone="Europe/Berlin"), *local_day(date(2026, 10, 25), "Europe/Berlin")
    )
    assert len(moments) == len(hour.replace("-", ",").split(",")) + (1 if hour == "1-3" else 0)
    assert moments[0 if hour != "1-3" else 1].astimezone(tz).strftime("%H:%M %Z") == "02:30 CEST"


def test_lord_howe_keeps_the_0240_run_of_its_change_over_sunday_when_chained_from_the_week_before() -> None:
    # Lord Howe moves its clocks 30 minutes: on 2026-10-04 02:00 becomes 02:30. 02:15 does not
    # exist and fires shifted to 02:45; 02:40 exists and fires first, at 02:40.
    tz = ZoneInfo("Australia/Lord_Howe")
    spec = CrontabSpec(minute="15,40", hour="2", day_of_week="sun", timezone="Australia/Lord_Howe")
    start = datetime(2026, 9, 27, 3, 0, tzinfo=tz).astimezone(UTC)
    moments = firings(spec, start, start + timedelta(days=14))
    walls = [moment.astimezone(tz).strftime("%m-%d %H:%M") for moment in moments]
    assert walls == ["10-04 02:40", "10-04 02:45", "10-11 02:15", "10-11 02:40"]
