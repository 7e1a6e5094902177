"""The periodic-task API's pure helpers: If-Match parsing and the response mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi import HTTPException

from erp.tasks.api.periodic_tasks_router import parse_if_match, to_out
from erp.tasks.scheduler_models import CrontabScheduleDB, PeriodicTaskDB


@pytest.mark.parametrize(("header", "version"), [('"3"', 3), ('W/"3"', 3), ("3", 3), (' "12" ', 12), (None, None)])
def test_if_match_names_a_version(header, version):
    assert parse_if_match(header) == version


@pytest.mark.parametrize("header", ['"three"', "*", '"3", "4"', ""])
def test_an_if_match_that_is_not_a_version_is_a_400(header):
    with pytest.raises(HTTPException) as caught:
        parse_if_match(header)
    assert caught.value.status_code == 400 and "If-Match" in caught.value.detail


def test_a_row_maps_to_its_output_with_the_schedule_kind_and_fields():
    created = datetime(2026, 1, 1, tzinfo=UTC)
    task = PeriodicTaskDB(
        id=5,
        name="nightly",
        task="erp.ping",
        args=[],
        kwargs={},
        headers={},
        one_off=False,
        enabled=True,
        description="",
        misfire_policy="run_once",
        total_run_count=0,
        version=2,
        from_config=False,
        overlap_policy="allow",
        jitter_seconds=0,
        consecutive_failures=0,
        created_at=created,
        updated_at=created,
        crontab_id=9,
        crontab=CrontabScheduleDB(
            id=9, minute="30", hour="2", day_of_week="*", day_of_month="*", month_of_year="*", timezone="Europe/Berlin"
        ),
    )
    out = to_out(task)
    assert (out.id, out.version, out.schedule.kind, out.schedule.id) == (5, 2, "crontab", 9)
    assert out.schedule.fields == {
        "minute": "30",
        "hour": "2",
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
        "timezone": "Europe/Berlin",
    }
