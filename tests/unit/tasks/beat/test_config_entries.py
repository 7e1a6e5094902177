"""beat_schedule entries as table fields: whatever Celery accepts, through its public attributes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from celery.schedules import crontab, schedule, solar

from erp.tasks.beat.config_entries import crontab_field_text, entry_values, schedule_fields
from erp.tasks.calendar.schedules import CrontabSpec, next_run_after, validate


@pytest.mark.parametrize(
    ("celery_schedule", "expected"),
    [
        (crontab(), {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}),
        (crontab(minute="*/15", hour="9-17"), {"minute": "*/15", "hour": "9,10,11,12,13,14,15,16,17"}),
        # Lists, sets and ranges, which Celery accepts, used to be stored as "[9, 17]" and then
        # disabled as broken (celery's private _orig_* fields were copied).
        (crontab(minute=0, hour=[9, 17]), {"minute": "0", "hour": "9,17"}),
        (crontab(minute=range(0, 60, 5)), {"minute": "*/5"}),
        (crontab(minute=0, hour=0, day_of_week={1, 2, 3, 4, 5}), {"day_of_week": "1,2,3,4,5"}),
        (crontab(minute=0, hour="1-23/2"), {"hour": "1-23/2"}),
        (crontab(minute=0, hour=3, day_of_month="1", month_of_year="1-12/3"), {"month_of_year": "*/3"}),
    ],
)
def test_crontabs_are_stored_as_text_celery_parses_back_to_the_same_sets(celery_schedule, expected):
    kind, fields = schedule_fields(celery_schedule, "Europe/Berlin")
    assert kind == "crontab" and fields["timezone"] == "Europe/Berlin"
    assert {key: fields[key] for key in expected} == expected
    spec = CrontabSpec(**fields)
    validate(spec)
    for name in ("minute", "hour", "day_of_week", "day_of_month", "month_of_year"):
        assert crontab(**{name: fields[name]}).__getattribute__(name) == getattr(celery_schedule, name), name


def test_a_stored_crontab_fires_like_the_configured_one():
    _, fields = schedule_fields(crontab(minute=[0, 30], hour={8, 20}), "UTC")
    moment = next_run_after(CrontabSpec(**fields), datetime(2026, 1, 1, 8, 10, tzinfo=UTC))
    assert moment == datetime(2026, 1, 1, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (60.0, {"every": 60, "period": "seconds"}),
        (timedelta(minutes=5), {"every": 300, "period": "seconds"}),
        (schedule(timedelta(milliseconds=1500)), {"every": 1_500_000, "period": "microseconds"}),
    ],
)
def test_intervals(value, expected):
    assert schedule_fields(value, "UTC") == ("interval", expected)


def test_a_schedule_the_table_cannot_store_is_none():
    assert schedule_fields(solar("sunrise", 52.5, 13.4), "UTC") is None


def test_field_text_keeps_lists_that_are_not_steps():
    assert crontab_field_text({0, 1, 5}, 0, 59) == "0,1,5"
    assert crontab_field_text({0, 30}, 0, 59) == "0,30"  # two values: a list, as written
    assert crontab_field_text(set(range(0, 60, 20)), 0, 59) == "*/20"


def test_entry_options_become_columns():
    values = entry_values(
        {"task": "erp.ping", "schedule": 5, "args": (1,), "options": {"queue": "q", "expires": 30, "priority": 3}}
    )
    assert values == {
        "task": "erp.ping",
        "args": [1],
        "kwargs": {},
        "queue": "q",
        "exchange": None,
        "routing_key": None,
        "priority": 3,
        "expire_seconds": 30,
    }
