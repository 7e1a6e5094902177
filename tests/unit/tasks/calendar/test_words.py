"""A schedule in words: the phrases the console shows for each kind and the common crontabs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from erp.tasks.calendar.specs import ClockedSpec, CrontabSpec, IntervalSpec, SolarSpec
from erp.tasks.calendar.words import describe


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (IntervalSpec(15, "minutes"), "every 15 minutes"),
        (IntervalSpec(1, "minutes"), "every minute"),
        (IntervalSpec(10, "seconds"), "every 10 seconds"),
        (IntervalSpec(1, "days"), "every day"),
        (IntervalSpec(2, "hours"), "every 2 hours"),
        (IntervalSpec(500, "microseconds"), "every 500 microseconds"),
    ],
)
def test_intervals(spec, words):
    assert describe(spec) == words


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"minute": "30", "hour": "2", "timezone": "Europe/Berlin"}, "every day at 02:30 Europe/Berlin"),
        ({"minute": "*/15"}, "every 15 minutes"),
        ({"minute": "*"}, "every minute"),
        ({"minute": "0"}, "every hour, on the hour"),
        ({"minute": "5,35"}, "every hour at minutes 5 and 35"),
        ({"minute": "0", "hour": "*/2"}, "every 2 hours at minute 0 UTC"),
        ({"minute": "0", "hour": "9,17"}, "every day at 09:00 and 17:00 UTC"),
        ({"minute": "0", "hour": "9", "day_of_week": "1-5"}, "Monday to Friday at 09:00 UTC"),
        ({"minute": "15", "hour": "8", "day_of_week": "mon,wed,fri"}, "on Monday, Wednesday and Friday at 08:15 UTC"),
        ({"minute": "0", "hour": "0", "day_of_week": "sat,sun"}, "on Saturday and Sunday at 00:00 UTC"),
        ({"minute": "0", "hour": "6", "day_of_week": "0"}, "every Sunday at 06:00 UTC"),
        ({"minute": "0", "hour": "0", "day_of_month": "1"}, "on day 1 of every month at 00:00 UTC"),
        ({"minute": "0", "hour": "0", "day_of_month": "1,15"}, "on days 1 and 15 of every month at 00:00 UTC"),
        ({"minute": "0", "hour": "6", "month_of_year": "1,7"}, "every day in January and July at 06:00 UTC"),
        (
            {"minute": "0", "hour": "0", "day_of_month": "13", "day_of_week": "5"},
            "on day 13 of every month when it is a Friday at 00:00 UTC",
        ),
        (
            {"minute": "*/5", "hour": "9-17", "day_of_week": "1-5", "timezone": "America/New_York"},
            "every 5 minutes from 09:00 to 17:59, Monday to Friday America/New_York",
        ),
        (
            {"minute": "0", "hour": "8-18", "timezone": "Europe/Berlin"},
            "every hour at minute 0 from 08:00 to 18:59 Europe/Berlin",
        ),
        # Every day of the week is every day.
        ({"minute": "30", "hour": "2", "day_of_week": "*/1"}, "every day at 02:30 UTC"),
    ],
)
def test_crontabs(fields, words):
    assert describe(CrontabSpec(**fields)) == words


def test_a_crontab_without_words_is_shown_as_it_is():
    assert describe(CrontabSpec(minute="1-59/7", hour="3", day_of_week="x")) == "cron 1-59/7 3 * * x (UTC)"


def test_clocked_and_solar():
    moment = datetime(2031, 5, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    assert describe(ClockedSpec(moment)) == "once, at 2031-05-01 07:00 UTC"
    assert describe(ClockedSpec(datetime(2031, 5, 1, tzinfo=UTC))) == "once, at 2031-05-01 00:00 UTC"
    assert describe(SolarSpec("sunrise", 52.52, 13.405)) == "every day at sunrise (52.52° N, 13.40° E)"
    assert describe(SolarSpec("dusk_civil", -33.87, -70.65)) == "every day at civil dusk (33.87° S, 70.65° W)"
