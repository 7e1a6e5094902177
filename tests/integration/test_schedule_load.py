"""`GET /api/v1/admin/schedule-load`: the forecast against a brute-force enumeration of every
schedule's slots, on a small mixed set in the real PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from erp.tasks.calendar import schedules
from erp.tasks.scheduler_models import (
    ClockedScheduleDB,
    CrontabScheduleDB,
    IntervalScheduleDB,
    PeriodicTaskDB,
    SolarScheduleDB,
)

URL = "/api/v1/admin/schedule-load"
# Six hours around Europe/Berlin's spring-forward (2030-03-31 01:00 UTC), not on whole minutes.
START = datetime(2030, 3, 30, 22, 0, 30, tzinfo=UTC)
END = datetime(2030, 3, 31, 4, 0, 10, tzinfo=UTC)
ANCHOR = datetime(2030, 3, 30, 21, 59, 58, 123456, tzinfo=UTC)


@pytest.fixture
def admin(clean_tables, make_user):
    return make_user(superuser=True)


def mixed_schedules() -> list[PeriodicTaskDB]:
    def task(name: str, **fields) -> PeriodicTaskDB:
        return PeriodicTaskDB(name=name, task="erp.ping", **fields)

    def interval(every: int, period: str) -> IntervalScheduleDB:
        return IntervalScheduleDB(every=every, period=period)

    return [
        task("every 7 s", interval=interval(7, "seconds"), next_run_at=ANCHOR),
        task("every 7 s twin", interval=interval(7, "seconds"), next_run_at=ANCHOR + timedelta(seconds=14)),
        task("every 0.25 s", interval=interval(250_000, "microseconds"), next_run_at=ANCHOR),
        task("every 90 min", interval=interval(90, "minutes"), next_run_at=ANCHOR + timedelta(hours=9)),
        task("every 61 s from its start", interval=interval(61, "seconds"), start_time=START + timedelta(hours=1)),
        task(
            "every 13 s until it expires",
            interval=interval(13, "seconds"),
            next_run_at=ANCHOR,
            expires=ANCHOR + timedelta(seconds=13 * 560),  # exactly on a slot (after 2 h): that slot runs
        ),
        task("daily", interval=interval(1, "days"), last_run_at=START - timedelta(hours=20, minutes=3)),
        task("berlin half hours", crontab=CrontabScheduleDB(minute="*/30", timezone="Europe/Berlin")),
        task("berlin half hours twin", crontab=CrontabScheduleDB(minute="*/30", timezone="Europe/Berlin")),
        task("berlin 02:30", crontab=CrontabScheduleDB(minute="30", hour="2", timezone="Europe/Berlin")),
        task("every minute", crontab=CrontabScheduleDB(minute="*"), jitter_seconds=30),
        task(
            "every 5 min until",
            crontab=CrontabScheduleDB(minute="*/5"),
            expires=START + timedelta(hours=3, minutes=2),
        ),
        task("sunrise in Berlin", solar=SolarScheduleDB(event="sunrise", latitude=52.52, longitude=13.4)),
        task("noon in the Coral Sea", solar=SolarScheduleDB(event="solar_noon", latitude=-18.0, longitude=165.0)),
        task("clocked inside", clocked=ClockedScheduleDB(clocked_time=START + timedelta(minutes=77, seconds=5))),
        task("clocked outside", clocked=ClockedScheduleDB(clocked_time=END + timedelta(minutes=5))),
        task(
            "one-off",
            one_off=True,
            crontab=CrontabScheduleDB(minute="0"),
            next_run_at=START + timedelta(hours=2, minutes=59, seconds=59),
        ),
        task("disabled", enabled=False, interval=interval(1, "seconds"), next_run_at=ANCHOR),
        task("paused", interval=interval(1, "seconds"), next_run_at=ANCHOR, paused_at=ANCHOR, pause_note="x"),
    ]


def brute_force(tasks: list[PeriodicTaskDB], start: datetime, end: datetime) -> Counter:
    """Every slot of every enabled, not paused schedule, enumerated one by one."""
    counts: Counter = Counter()
    for (minute, _), firings in brute_force_by_task(tasks, start, end).items():
        counts[minute] += firings
    return counts


def brute_force_by_task(tasks: list[PeriodicTaskDB], start: datetime, end: datetime) -> Counter:
    """The slots of each schedule per minute, by (minute, name)."""
    counts: Counter = Counter()
    for task in tasks:
        if not task.enabled or task.paused_at is not None:
            continue
        spec = task.get_schedule()
        if task.one_off:
            slots = [task.next_run_at]
        elif isinstance(spec, schedules.ClockedSpec):
            slots = [spec.clocked_time]
        elif isinstance(spec, schedules.IntervalSpec):
            step = timedelta(**{spec.period: spec.every})
            slot = task.next_run_at or task.last_run_at or task.start_time
            while slot > start - step:  # walk back to before the window, then forwards
                slot -= step
            slots = []
            while slot < end:
                slots.append(slot)
                slot += step
        else:
            slots = []
            slot = schedules.next_run_after(spec, start - timedelta(seconds=1))
            while slot < end:
                slots.append(slot)
                slot = schedules.next_run_after(spec, slot)
        for slot in slots:
            if (task.start_time and slot < task.start_time) or (task.expires and slot > task.expires):
                continue
            if start <= slot < end:
                counts[slot.replace(second=0, microsecond=0), task.name] += 1
    return counts


def test_the_forecast_matches_a_brute_force_enumeration(api_client, admin, sync_engine):
    tasks = mixed_schedules()
    with Session(sync_engine, expire_on_commit=False) as session, session.begin():
        session.add_all(tasks)
    minute_start = START.replace(second=0)
    minute_end = END.replace(second=0) + timedelta(minutes=1)
    expected = brute_force(tasks, minute_start, minute_end)

    response = api_client.get(
        URL, params={"from": START.isoformat(), "to": END.isoformat(), "top": 3}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    load = response.json()
    minutes = {datetime.fromisoformat(item["minute"]): item["occurrences"] for item in load["minutes"]}
    assert len(minutes) == 361 and min(minutes) == minute_start and max(minutes) == minute_end - timedelta(minutes=1)
    assert {minute: count for minute, count in minutes.items() if count} == dict(expected)
    assert load["total"] == sum(expected.values())
    assert (load["schedules"], load["jittered_schedules"], load["not_computable"]) == (17, 1, 0)
    busiest = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:3]
    assert [(datetime.fromisoformat(item["minute"]), item["occurrences"]) for item in load["busiest"]] == busiest
    # The DST change is in it: Berlin's */30 fires at 00:00, 00:30, 01:00 (02:00 CET), then 03:00 CEST.
    assert minutes[datetime(2030, 3, 31, 0, 30, tzinfo=UTC)] >= 2 + 240 + 8


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"from": "2030-01-01T00:00:00Z", "to": "2030-01-02T00:00:01Z"}, "spans 1441 minutes"),
        ({"from": "2030-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, "must be after from"),
        ({"from": "2030-01-01T00:00:00", "to": "2030-01-01T01:00:00Z"}, "from needs a UTC offset"),
        ({"from": "2030-01-01T00:00:00Z"}, "to"),
    ],
)
def test_a_bad_window_is_a_422_naming_it(api_client, admin, params, fragment):
    response = api_client.get(URL, params=params, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]


def test_a_whole_day_is_allowed(api_client, admin):
    params = {"from": "2030-01-01T00:00:00Z", "to": "2030-01-02T00:00:00Z"}
    load = api_client.get(URL, params=params, headers=admin.headers).json()
    assert len(load["minutes"]) == 1440 and load["total"] == 0 and load["busiest"] == []


def test_a_minute_lists_the_schedules_behind_its_count(api_client, admin, sync_engine):
    tasks = mixed_schedules()
    with Session(sync_engine, expire_on_commit=False) as session, session.begin():
        session.add_all(tasks)
    start, end = START.replace(second=0), END.replace(second=0) + timedelta(minutes=1)
    expected = brute_force_by_task(tasks, start, end)
    load = api_client.get(URL, params={"from": START.isoformat(), "to": END.isoformat()}, headers=admin.headers).json()
    counts = {datetime.fromisoformat(item["minute"]): item["occurrences"] for item in load["minutes"]}
    # The clock change, an expiry and a clocked slot, two empty minutes, and a sample of the rest.
    minutes = [
        datetime(2030, 3, 31, 0, 30, tzinfo=UTC),
        START + timedelta(minutes=77, seconds=5),
        end - timedelta(minutes=1),
    ]
    minutes += [ANCHOR + timedelta(seconds=13 * 560), datetime(2030, 3, 31, 3, 31, tzinfo=UTC), *sorted(counts)[::37]]
    for moment in minutes:
        minute = moment.replace(second=0, microsecond=0)
        response = api_client.get(f"{URL}/minute", params={"at": moment.isoformat()}, headers=admin.headers)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert datetime.fromisoformat(answer["minute"]) == minute
        assert answer["occurrences"] == counts.get(minute, 0) == sum(n for (m, _), n in expected.items() if m == minute)
        listed = {item["name"]: item["firings"] for item in answer["items"]}
        assert listed == {name: n for (m, name), n in expected.items() if m == minute}, minute
        assert answer["schedules"] == len(listed)
        for item in answer["items"]:
            assert minute <= datetime.fromisoformat(item["scheduled_at"]) < minute + timedelta(minutes=1)
    busy = datetime(2030, 3, 31, 0, 30, tzinfo=UTC)
    limited = api_client.get(f"{URL}/minute", params={"at": busy.isoformat(), "limit": 2}, headers=admin.headers).json()
    assert len(limited["items"]) == 2 and limited["schedules"] > 2 and limited["occurrences"] == counts[busy]


def test_a_minute_needs_an_aware_moment(api_client, admin):
    response = api_client.get(f"{URL}/minute", params={"at": "2030-01-01T00:00:00"}, headers=admin.headers)
    assert response.status_code == 422 and "at needs a UTC offset" in response.json()["error"]["message"]
