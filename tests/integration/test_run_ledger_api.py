"""The run ledger through the admin API, against the real PostgreSQL (and Redis where beat sends):
policies, pause and resume, backfill, runs, last outcomes, "why didn't it run at T?", and the
status of a periodic run."""

from __future__ import annotations

import select as select_module
import uuid
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from erp.core.config import get_settings
from erp.tasks.calendar import schedules
from erp.tasks.calendar.schedules import jitter_offset
from erp.tasks.periodic_messages import periodic_run_id
from erp.tasks.scheduler_models import PeriodicTaskRunDB
from tests.support.scheduling import empty_broker, queued_runs

BASE = "/api/v1/admin/periodic-tasks"


@pytest.fixture
def admin(clean_tables, make_user):
    return make_user(superuser=True)


def new_task(client, admin, **overrides) -> dict:
    body = {"name": "hourly", "task": "erp.ping", "schedule": {"kind": "interval", "every": 1, "period": "hours"}}
    response = client.post(BASE, json={**body, **overrides}, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def add_run(engine, task: dict, scheduled_at: datetime, state: str = "succeeded", **fields) -> int:
    """A ledger row written as beat and the worker would."""
    with Session(engine) as session, session.begin():
        run = PeriodicTaskRunDB(
            periodic_task_id=task["id"],
            periodic_task_name=task["name"],
            task_name=task["task"],
            scheduled_at=scheduled_at,
            due_at=fields.pop("due_at", scheduled_at),
            message_id=fields.pop("message_id", periodic_run_id(task["id"], scheduled_at)),
            state=state,
            **fields,
        )
        session.add(run)
        session.flush()
        return run.id


def error_message(response) -> str:
    return response.json()["error"]["message"]


HOUR = datetime(2030, 1, 1, 12, tzinfo=UTC)


# --- policies ------------------------------------------------------------------------------------


def test_policies_are_saved_audited_and_returned(api_client, admin):
    task = new_task(
        api_client,
        admin,
        overlap_policy="buffer_one",
        jitter_seconds=30,
        start_deadline_seconds=60,
        finish_deadline_seconds=600,
        auto_pause_after_failures=3,
    )
    assert (
        task["overlap_policy"],
        task["jitter_seconds"],
        task["start_deadline_seconds"],
        task["finish_deadline_seconds"],
        task["auto_pause_after_failures"],
    ) == ("buffer_one", 30, 60, 600, 3)
    assert (task["paused_at"], task["consecutive_failures"], task["last_run"]) == (None, 0, None)
    url = f"{BASE}/{task['id']}"
    changed = api_client.patch(
        url,
        json={"overlap_policy": "skip", "jitter_seconds": 0, "auto_pause_after_failures": None, "version": 1},
        headers=admin.headers,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["overlap_policy"], changed.json()["auto_pause_after_failures"]) == ("skip", None)
    change = api_client.get(f"{url}/changes", headers=admin.headers).json()[0]
    assert change["changes"] == {
        "overlap_policy": ["buffer_one", "skip"],
        "jitter_seconds": [30, 0],
        "auto_pause_after_failures": [3, None],
    }
    created = api_client.get(f"{url}/changes", headers=admin.headers).json()[-1]
    assert created["changes"]["jitter_seconds"] == 30 and created["changes"]["overlap_policy"] == "buffer_one"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"overlap_policy": "queue"}, "overlap_policy"),
        ({"jitter_seconds": 86_401}, "jitter_seconds"),
        ({"jitter_seconds": -1}, "jitter_seconds"),
        ({"start_deadline_seconds": 0}, "start_deadline_seconds"),
        ({"finish_deadline_seconds": 2**31}, "finish_deadline_seconds"),
        ({"auto_pause_after_failures": 0}, "auto_pause_after_failures"),
    ],
)
def test_bad_policies_are_a_422_naming_the_field_and_write_nothing(api_client, admin, overrides, fragment):
    body = {"name": "bad", "task": "erp.ping", "schedule": {"kind": "interval", "every": 10}, **overrides}
    response = api_client.post(BASE, json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert fragment in error_message(response)
    assert api_client.get(BASE, headers=admin.headers).json()["total"] == 0


@pytest.mark.parametrize("field", ["enabled", "overlap_policy", "jitter_seconds", "misfire_policy", "args"])
def test_null_for_a_field_that_cannot_be_empty_is_a_422_not_a_500(api_client, admin, field):
    # Before: PATCH {"enabled": null} reached the NOT NULL column and answered 500; {"args": null}
    # was saved as JSON null, and beat then disabled the row as broken.
    task = new_task(api_client, admin)
    response = api_client.patch(f"{BASE}/{task['id']}", json={field: None, "version": 1}, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert f"{field}: may not be null" in error_message(response)
    assert api_client.get(f"{BASE}/{task['id']}", headers=admin.headers).json()["version"] == 1


def test_preview_shows_each_slot_and_its_due_time_with_jitter(api_client, admin):
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    task = new_task(api_client, admin, start_time=start.isoformat(), jitter_seconds=600)
    preview = api_client.get(f"{BASE}/{task['id']}/preview", params={"count": 3}, headers=admin.headers).json()
    slots = [start + timedelta(hours=hours) for hours in range(3)]
    assert [datetime.fromisoformat(moment) for moment in preview["next_runs"]] == slots
    runs = [
        (datetime.fromisoformat(run["scheduled_at"]), datetime.fromisoformat(run["due_at"])) for run in preview["runs"]
    ]
    assert runs == [(slot, slot + jitter_offset(task["id"], slot, 600)) for slot in slots]
    assert all(timedelta(0) <= due - slot < timedelta(seconds=600) for slot, due in runs)
    assert len({due - slot for slot, due in runs}) == 3, "each slot its own offset"


# --- pause and resume ---------------------------------------------------------------------------


def test_pause_with_a_note_then_resume_are_audited_and_shown(api_client, admin, sync_engine):
    task = new_task(api_client, admin)
    url = f"{BASE}/{task['id']}"
    with sync_engine.begin() as connection:
        connection.execute(
            text("UPDATE periodic_tasks SET consecutive_failures = 2 WHERE id = :id"), {"id": task["id"]}
        )
    paused = api_client.post(f"{url}/pause", json={"note": "supplier API down"}, headers=admin.headers)
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert (body["pause_note"], body["version"], paused.headers["ETag"]) == ("supplier API down", 2, '"2"')
    assert body["paused_by"].endswith("@example.com")
    assert abs(datetime.fromisoformat(body["paused_at"]) - datetime.now(UTC)) < timedelta(seconds=30)
    again = api_client.post(f"{url}/pause", json={"note": "twice"}, headers=admin.headers)
    assert again.status_code == 409 and "already paused" in error_message(again)

    resumed = api_client.post(f"{url}/resume", headers=admin.headers).json()
    assert (resumed["paused_at"], resumed["paused_by"], resumed["pause_note"]) == (None, None, None)
    assert resumed["consecutive_failures"] == 0 and resumed["version"] == 3
    assert api_client.post(f"{url}/resume", headers=admin.headers).status_code == 409

    changes = api_client.get(f"{url}/changes", headers=admin.headers).json()
    assert [change["action"] for change in changes] == ["resume", "pause", "create"]
    assert changes[1]["changes"] == {"paused": [False, True], "pause_note": [None, "supplier API down"]}
    assert changes[0]["changes"]["consecutive_failures"] == [2, 0]
    assert changes[1]["actor_user_id"] == admin.user_id


@pytest.mark.parametrize(("body", "fragment"), [({}, "note"), ({"note": ""}, "note"), ({"note": "a\u0000b"}, "note")])
def test_a_pause_needs_a_note(api_client, admin, body, fragment):
    task = new_task(api_client, admin)
    response = api_client.post(f"{BASE}/{task['id']}/pause", json=body, headers=admin.headers)
    assert response.status_code == 422 and fragment in error_message(response)
    assert api_client.get(f"{BASE}/{task['id']}", headers=admin.headers).json()["paused_at"] is None


def test_a_paused_task_is_recorded_as_skipped_by_beat(api_client, admin, scheduler, sync_engine):
    task = new_task(api_client, admin, schedule={"kind": "interval", "every": 1})
    api_client.post(f"{BASE}/{task['id']}/pause", json={"note": "maintenance"}, headers=admin.headers)
    scheduler.send_due(datetime.now(UTC) + timedelta(seconds=2))
    runs = api_client.get(f"{BASE}/{task['id']}/runs", headers=admin.headers).json()["items"]
    assert runs and {(run["state"], run["skip_reason"]) for run in runs} == {("skipped", "paused")}
    assert queued_runs("hourly") == []


# --- backfill ----------------------------------------------------------------------------------


def test_backfill_plans_each_slot_once_and_beat_sends_them(api_client, admin, scheduler, sync_engine):
    task = new_task(api_client, admin, schedule={"kind": "crontab", "minute": "0"}, enabled=False)
    now = datetime.now(UTC)
    start = (now - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=4)
    already = add_run(sync_engine, task, start + timedelta(hours=1), "succeeded")
    url = f"{BASE}/{task['id']}/backfill"

    answer = api_client.post(url, json={"from": start.isoformat(), "to": end.isoformat()}, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "planned": 4,
        "already_recorded": 1,
        "first_slot": start.isoformat().replace("+00:00", "Z"),
        "last_slot": end.isoformat().replace("+00:00", "Z"),
    }
    runs = api_client.get(f"{BASE}/{task['id']}/runs", headers=admin.headers).json()["items"]
    slots = [start + timedelta(hours=hours) for hours in range(5)]
    assert [datetime.fromisoformat(run["scheduled_at"]) for run in runs] == slots[::-1]
    backfilled = [run for run in runs if run["id"] != already]
    assert {(run["origin"], run["state"]) for run in backfilled} == {("backfill", "planned")}
    assert all(
        run["message_id"] == periodic_run_id(task["id"], datetime.fromisoformat(run["scheduled_at"])) for run in runs
    )

    empty_broker()
    assert scheduler.publish_due(datetime.now(UTC)) == 4
    sent = queued_runs("hourly")
    assert sorted(run["scheduled_at"] for run in sent) == [slot for slot in slots if slot != slots[1]]

    repeated = api_client.post(url, json={"from": start.isoformat(), "to": end.isoformat()}, headers=admin.headers)
    assert (repeated.json()["planned"], repeated.json()["already_recorded"]) == (0, 5)


def test_backfill_wakes_beat(api_client, admin):
    task = new_task(api_client, admin, schedule={"kind": "interval", "every": 10, "period": "minutes"})
    listener = psycopg2.connect(get_settings().sync_database_url.replace("postgresql+psycopg2", "postgresql"))
    listener.autocommit = True
    try:
        listener.cursor().execute("LISTEN erp_periodic_tasks")
        end = datetime.now(UTC) - timedelta(minutes=1)
        body = {"from": (end - timedelta(hours=1)).isoformat(), "to": end.isoformat()}
        assert api_client.post(f"{BASE}/{task['id']}/backfill", json=body, headers=admin.headers).json()["planned"] == 6
        assert select_module.select([listener], [], [], 5) != ([], [], [])
        listener.poll()
        assert [notify.channel for notify in listener.notifies][-1:] == ["erp_periodic_tasks"]
    finally:
        listener.close()


def test_interval_backfill_keeps_the_tasks_grid(api_client, admin, sync_engine):
    task = new_task(api_client, admin, schedule={"kind": "interval", "every": 15, "period": "minutes"})
    grid = datetime.fromisoformat(task["next_run_at"])
    start = grid - timedelta(hours=1, minutes=7)
    body = {"from": start.isoformat(), "to": (grid - timedelta(minutes=1)).isoformat()}
    assert api_client.post(f"{BASE}/{task['id']}/backfill", json=body, headers=admin.headers).json()["planned"] == 4
    runs = api_client.get(f"{BASE}/{task['id']}/runs", headers=admin.headers).json()["items"]
    assert [datetime.fromisoformat(run["scheduled_at"]) for run in runs] == [
        grid - timedelta(minutes=15 * step) for step in range(1, 5)
    ]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}, "holds more than 1000 occurrences"),
        ({"from": "2000-01-01T00:00:00Z", "to": "2020-03-01T00:00:00Z"}, "holds more than 1000 occurrences"),
        ({"from": "2020-01-02T00:00:00Z", "to": "2020-01-01T00:00:00Z"}, "`to` is before `from`"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}, "in the future"),
        ({"from": "2020-01-01T00:00:00", "to": "2020-01-01T01:00:00Z"}, "from needs a UTC offset"),
        ({"from": "2020-01-01T00:00:00Z"}, "to"),
    ],
)
def test_backfill_refuses_bad_or_too_large_ranges_and_writes_nothing(api_client, admin, body, fragment):
    task = new_task(api_client, admin, schedule={"kind": "crontab", "minute": "*"})
    response = api_client.post(f"{BASE}/{task['id']}/backfill", json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert fragment in error_message(response)
    assert api_client.get(f"{BASE}/{task['id']}/runs", headers=admin.headers).json()["items"] == []


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ({"kind": "interval", "every": 1, "period": "minutes"}, "holds 1440 occurrences"),
        # A solar slot costs about a millisecond to compute: the walk stops at the limit, where
        # counting every slot of 26 years would take the request ten seconds and more.
        ({"kind": "solar", "event": "sunrise", "latitude": 52.52, "longitude": 13.4}, "holds more than 1000"),
    ],
)
def test_a_backfill_too_large_is_refused_without_walking_the_whole_range(api_client, admin, schedule, fragment):
    task = new_task(api_client, admin, schedule=schedule)
    ranges = {
        # A day less a microsecond holds 1440 slots of the minute grid, wherever the grid lies.
        "interval": {"from": "2020-01-01T00:00:00Z", "to": "2020-01-01T23:59:59.999999Z"},
        "solar": {"from": "2000-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    }
    calls = 0
    original = schedules.next_run_after

    def counted(*args, **kwargs):
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schedules, "next_run_after", counted)
        response = api_client.post(
            f"{BASE}/{task['id']}/backfill", json=ranges[schedule["kind"]], headers=admin.headers
        )
    assert response.status_code == 422, response.text
    assert fragment in error_message(response)
    assert calls <= 1002, f"{calls} slots computed for a backfill of at most 1000"


def test_backfill_of_an_unknown_task_is_404(api_client, admin):
    body = {"from": "2020-01-01T00:00:00Z", "to": "2020-01-01T01:00:00Z"}
    assert api_client.post(f"{BASE}/424242/backfill", json=body, headers=admin.headers).status_code == 404


# --- runs and last outcomes ----------------------------------------------------------------------


@pytest.fixture
def ledger(api_client, admin, sync_engine):
    """Two tasks with a few occurrences in every interesting state."""
    first = new_task(api_client, admin, name="first")
    second = new_task(api_client, admin, name="second")
    ids = {
        "ok": add_run(
            sync_engine,
            first,
            HOUR,
            "succeeded",
            started_at=HOUR + timedelta(seconds=2),
            finished_at=HOUR + timedelta(seconds=3),
        ),
        "late": add_run(
            sync_engine,
            first,
            HOUR + timedelta(hours=1),
            "succeeded",
            started_at=HOUR + timedelta(hours=1, minutes=5),
        ),
        "failed": add_run(
            sync_engine,
            first,
            HOUR + timedelta(hours=2),
            "failed",
            started_at=HOUR + timedelta(hours=2, seconds=1),
            finished_at=HOUR + timedelta(hours=2, seconds=9),
            error_type="ValueError",
            error_message="boom",
        ),
        "paused": add_run(sync_engine, second, HOUR, "skipped", skip_reason="paused"),
        "overlap": add_run(sync_engine, second, HOUR + timedelta(hours=1), "skipped", skip_reason="overlap"),
        "deadline": add_run(
            sync_engine,
            second,
            HOUR + timedelta(hours=2),
            "succeeded",
            started_at=HOUR + timedelta(hours=2, seconds=1),
            finish_deadline_missed=True,
        ),
    }
    return first, second, ids


def run_ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [run["id"] for run in response.json()["items"]]


def test_a_tasks_runs_newest_first_filtered_and_paginated(api_client, admin, ledger):
    first, _, ids = ledger
    url = f"{BASE}/{first['id']}/runs"
    assert run_ids(api_client.get(url, headers=admin.headers)) == [ids["failed"], ids["late"], ids["ok"]]
    assert run_ids(api_client.get(url, params={"state": ["failed", "succeeded"]}, headers=admin.headers)) == [
        ids["failed"],
        ids["late"],
        ids["ok"],
    ]
    assert run_ids(api_client.get(url, params={"state": "failed"}, headers=admin.headers)) == [ids["failed"]]
    window = {"from": (HOUR + timedelta(hours=1)).isoformat(), "to": (HOUR + timedelta(hours=2)).isoformat()}
    assert run_ids(api_client.get(url, params=window, headers=admin.headers)) == [ids["late"]]
    page = api_client.get(url, params={"limit": 1, "offset": 1}, headers=admin.headers).json()
    assert ([run["id"] for run in page["items"]], page["has_more"]) == ([ids["late"]], True)
    failed = api_client.get(url, params={"state": "failed"}, headers=admin.headers).json()["items"][0]
    assert (failed["error_type"], failed["error_message"], failed["origin"]) == ("ValueError", "boom", "schedule")
    assert api_client.get(url, params={"state": "lost"}, headers=admin.headers).status_code == 422
    assert api_client.get(f"{BASE}/987654/runs", headers=admin.headers).status_code == 404


def test_runs_across_schedules_late_failed_skipped(api_client, admin, ledger):
    _, second, ids = ledger
    url = "/api/v1/admin/runs"
    assert len(run_ids(api_client.get(url, headers=admin.headers))) == 6
    assert run_ids(api_client.get(url, params={"failed": True}, headers=admin.headers)) == [ids["failed"]]
    assert run_ids(api_client.get(url, params={"skipped": True}, headers=admin.headers)) == [
        ids["overlap"],
        ids["paused"],
    ]
    assert run_ids(api_client.get(url, params={"skip_reason": "paused"}, headers=admin.headers)) == [ids["paused"]]
    assert set(run_ids(api_client.get(url, params={"late": True}, headers=admin.headers))) == {
        ids["late"],
        ids["deadline"],
    }
    assert set(run_ids(api_client.get(url, params={"late": True, "late_after_seconds": 1}, headers=admin.headers))) == {
        ids["late"],
        ids["deadline"],
        ids["ok"],
    }
    by_task = api_client.get(
        url, params={"periodic_task_id": second["id"], "to": HOUR.isoformat()}, headers=admin.headers
    )
    assert run_ids(by_task) == []
    by_task = api_client.get(
        url, params={"periodic_task_id": second["id"], "from": HOUR.isoformat()}, headers=admin.headers
    )
    assert run_ids(by_task) == [ids["deadline"], ids["overlap"], ids["paused"]]
    assert api_client.get(url, params={"skip_reason": "bored"}, headers=admin.headers).status_code == 422


def test_a_schedule_shows_its_last_outcome_in_the_list_and_alone(api_client, admin, ledger):
    first, _, _ = ledger
    third = new_task(api_client, admin, name="third")
    items = {item["name"]: item for item in api_client.get(BASE, headers=admin.headers).json()["items"]}
    assert items["first"]["last_run"] == {
        "state": "failed",
        "scheduled_at": (HOUR + timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
        "started_at": (HOUR + timedelta(hours=2, seconds=1)).isoformat().replace("+00:00", "Z"),
        "finished_at": (HOUR + timedelta(hours=2, seconds=9)).isoformat().replace("+00:00", "Z"),
        "error_type": "ValueError",
        "error_message": "boom",
    }
    assert items["second"]["last_run"]["state"] == "succeeded"
    assert items["third"]["last_run"] is None
    alone = api_client.get(f"{BASE}/{first['id']}", headers=admin.headers).json()
    assert alone["last_run"]["error_message"] == "boom"
    assert api_client.get(f"{BASE}/{third['id']}", headers=admin.headers).json()["last_run"] is None


# --- why didn't it run at T? ----------------------------------------------------------------------


def at(api_client, admin, task: dict, moment: datetime, **params) -> dict:
    response = api_client.get(
        f"{BASE}/{task['id']}/runs/at", params={"time": moment.isoformat(), **params}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_run_at_a_time_is_its_ledger_row_exact_or_nearest_within_the_tolerance(api_client, admin, ledger):
    first, _, ids = ledger
    assert at(api_client, admin, first, HOUR)["run"]["id"] == ids["ok"]
    near = at(api_client, admin, first, HOUR + timedelta(seconds=20))
    assert near["run"]["id"] == ids["ok"] and near["reasons"] == ["recorded"]
    far = at(api_client, admin, first, HOUR + timedelta(seconds=20), tolerance_seconds=10)
    assert far["run"] is None and "recorded" not in far["reasons"]


def test_why_not_created_after_or_not_a_slot(api_client, admin):
    task = new_task(api_client, admin, schedule={"kind": "crontab", "minute": "0", "hour": "*/6"})
    before = at(api_client, admin, task, datetime.now(UTC) - timedelta(days=1))
    assert before["run"] is None and before["reasons"] == ["created_after"]
    soon = datetime.now(UTC) + timedelta(days=1)
    odd = soon.replace(hour=7, minute=13, second=0, microsecond=0)
    answer = at(api_client, admin, task, odd)
    assert "not_a_slot" in answer["reasons"] and "in_future" in answer["reasons"]
    assert [datetime.fromisoformat(slot) for slot in answer["nearest_slots"]] == [
        odd.replace(hour=6, minute=0),
        odd.replace(hour=12, minute=0),
    ]


def test_why_not_disabled_or_paused_at_that_time_from_the_change_log(api_client, admin, sync_engine):
    task = new_task(api_client, admin, schedule={"kind": "crontab", "minute": "*"})
    url = f"{BASE}/{task['id']}"
    # Move the creation into the past so the history can be replayed at chosen moments.
    day = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    api_client.post(f"{url}/disable", headers=admin.headers)
    api_client.post(f"{url}/enable", headers=admin.headers)
    api_client.post(f"{url}/pause", json={"note": "month end"}, headers=admin.headers)
    with sync_engine.begin() as connection:
        # In the order they were made: create, disable, enable, pause.
        for action_index, hours in enumerate([0, 2, 4, 6]):
            connection.execute(
                text(
                    "UPDATE periodic_task_changes SET changed_at = :at WHERE id = ("
                    " SELECT id FROM periodic_task_changes WHERE periodic_task_id = :id ORDER BY id OFFSET :n LIMIT 1)"
                ),
                {"at": day + timedelta(hours=hours), "id": task["id"], "n": action_index},
            )
        connection.execute(
            text("UPDATE periodic_tasks SET created_at = :at WHERE id = :id"), {"at": day, "id": task["id"]}
        )
    assert at(api_client, admin, task, day + timedelta(hours=1))["reasons"] == ["not_recorded"]
    disabled = at(api_client, admin, task, day + timedelta(hours=3))
    assert disabled["reasons"] == ["disabled"], disabled
    paused = at(api_client, admin, task, day + timedelta(hours=7))
    assert paused["reasons"] == ["paused"] and "month end" in paused["explanation"][0]


def test_why_not_pruned_and_unknown_tasks(api_client, admin, sync_engine):
    task = new_task(api_client, admin, schedule={"kind": "crontab", "minute": "0"})
    old = (datetime.now(UTC) - timedelta(days=40)).replace(minute=0, second=0, microsecond=0)
    with sync_engine.begin() as connection:
        connection.execute(
            text("UPDATE periodic_tasks SET created_at = :at WHERE id = :id"),
            {"at": old - timedelta(days=1), "id": task["id"]},
        )
        connection.execute(
            text("UPDATE periodic_task_changes SET changed_at = :at WHERE periodic_task_id = :id"),
            {"at": old - timedelta(days=1), "id": task["id"]},
        )
    answer = at(api_client, admin, task, old)
    assert answer["reasons"] == ["pruned"] and "30 days" in answer["explanation"][0]
    missing = api_client.get(f"{BASE}/987654/runs/at", params={"time": old.isoformat()}, headers=admin.headers)
    assert missing.status_code == 404
    naive = api_client.get(
        f"{BASE}/{task['id']}/runs/at", params={"time": "2030-01-01T00:00:00"}, headers=admin.headers
    )
    assert naive.status_code == 422 and "UTC offset" in error_message(naive)


# --- the status of a periodic run ---------------------------------------------------------------


def test_a_made_up_task_id_is_404_for_superusers_too(api_client, admin):
    # Before: superusers got 200 PENDING for any id, since beat's runs have no owner record.
    response = api_client.get(f"/api/v1/tasks/{uuid.uuid4()}", headers=admin.headers)
    assert response.status_code == 404, response.text
    assert api_client.post(f"/api/v1/tasks/{uuid.uuid4()}/revoke", headers=admin.headers).status_code == 404


def test_a_periodic_runs_status_links_to_its_schedule_for_superusers(api_client, admin, make_user, sync_engine):
    task = new_task(api_client, admin)
    add_run(sync_engine, task, HOUR, "sent")
    message_id = periodic_run_id(task["id"], HOUR)
    status = api_client.get(f"/api/v1/tasks/{message_id}", headers=admin.headers)
    assert status.status_code == 200, status.text
    body = status.json()
    assert (body["periodic_task_id"], body["periodic_task_name"], body["run_state"]) == (task["id"], "hourly", "sent")
    assert datetime.fromisoformat(body["scheduled_at"]) == HOUR and body["task_name"] == "erp.ping"
    member = make_user(role="admin")
    assert api_client.get(f"/api/v1/tasks/{message_id}", headers=member.headers).status_code == 404
