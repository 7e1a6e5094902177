"""`/api/v1/admin/periodic-tasks` against the real PostgreSQL (and Redis for run-now)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.scheduling import empty_broker, queued_runs

BASE = "/api/v1/admin/periodic-tasks"


@pytest.fixture
def admin(clean_tables, make_user):
    return make_user(superuser=True)


def new_task(client, admin, **overrides):
    body = {"name": "every ten seconds", "task": "erp.ping", "schedule": {"kind": "interval", "every": 10}, **overrides}
    response = client.post(BASE, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response


def test_create_computes_the_next_run_and_sets_an_etag(api_client, admin):
    response = new_task(api_client, admin, args=[1], kwargs={"a": 2})
    task = response.json()
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == f"{BASE}/{task['id']}"
    assert task["schedule"] == {
        "kind": "interval",
        "id": task["schedule"]["id"],
        "fields": {"every": 10, "period": "seconds"},
    }
    assert task["next_run_at"] is not None and task["enabled"] and task["version"] == 1


@pytest.mark.parametrize(
    ("schedule", "local_fields"),
    [
        ({"kind": "crontab", "minute": "30", "hour": "2", "timezone": "Europe/Berlin"}, {"hour": 2, "minute": 30}),
        ({"kind": "solar", "event": "sunrise", "latitude": 52.52, "longitude": 13.4}, None),
        ({"kind": "clocked", "clocked_time": "2031-05-01T09:00:00+02:00"}, None),
    ],
)
def test_every_schedule_kind_can_be_created_inline(api_client, admin, schedule, local_fields):
    task = new_task(api_client, admin, name=f"kind {schedule['kind']}", schedule=schedule).json()
    assert task["schedule"]["kind"] == schedule["kind"]
    next_run = datetime.fromisoformat(task["next_run_at"])
    assert next_run > datetime.now(UTC)
    if local_fields:
        from zoneinfo import ZoneInfo

        local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
        assert {"hour": local.hour, "minute": local.minute} == local_fields


def test_a_schedule_can_be_referenced_by_id(api_client, admin):
    first = new_task(api_client, admin).json()
    second = new_task(api_client, admin, name="same cadence", schedule=None, interval_id=first["schedule"]["id"]).json()
    assert second["schedule"]["id"] == first["schedule"]["id"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"task": "erp.no_such_task"}, "'erp.no_such_task' is not registered"),
        ({"schedule": {"kind": "crontab", "minute": "61"}}, "minute"),
        ({"schedule": {"kind": "crontab", "timezone": "Mars/Base"}}, "Mars/Base"),
        ({"schedule": {"kind": "interval", "every": 0}}, "greater than 0"),
        ({"args": {"not": "a list"}}, "args"),
        ({"kwargs": [1, 2]}, "kwargs"),
        ({"args": ["x" * 20_000]}, "at most 16384"),
        ({"schedule": None}, "a schedule is required"),
        ({"interval_id": 999999, "schedule": None}, "interval_id 999999 does not exist"),
        ({"unknown_field": 1}, "unknown_field"),
        # Beat could not compute this (OverflowError) and stopped; now refused when saved.
        ({"schedule": {"kind": "interval", "every": 3000000, "period": "days"}}, "maximum of 36500 days"),
        # kombu would drop these messages while beat counted them as sent.
        ({"exchange": "nowhere", "routing_key": "anything"}, "exchange 'nowhere' has no queue bound to it"),
        ({"exchange": "celery", "routing_key": "elsewhere"}, "no queue is bound to exchange 'celery'"),
        ({"name": "x" * 201}, "name"),
    ],
)
def test_bad_input_is_a_422_that_says_what_is_wrong_and_writes_nothing(api_client, admin, overrides, fragment):
    body = {"name": "bad", "task": "erp.ping", "schedule": {"kind": "interval", "every": 10}, **overrides}
    response = api_client.post(BASE, json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]
    assert api_client.get(BASE, headers=admin.headers).json()["total"] == 0


def test_a_name_clash_is_a_409(api_client, admin):
    new_task(api_client, admin)
    response = api_client.post(
        BASE,
        json={"name": "every ten seconds", "task": "erp.ping", "schedule": {"kind": "interval", "every": 5}},
        headers=admin.headers,
    )
    assert response.status_code == 409
    assert "already exists" in response.json()["error"]["message"]


def test_list_filters_and_paginates(api_client, admin):
    for number in range(5):
        new_task(api_client, admin, name=f"report {number}", enabled=number % 2 == 0)
    page = api_client.get(BASE, params={"limit": 2, "offset": 1}, headers=admin.headers).json()
    assert (page["total"], [item["name"] for item in page["items"]]) == (5, ["report 1", "report 2"])
    enabled = api_client.get(BASE, params={"enabled": True}, headers=admin.headers).json()
    assert [item["name"] for item in enabled["items"]] == ["report 0", "report 2", "report 4"]
    by_name = api_client.get(BASE, params={"name": "PORT 3"}, headers=admin.headers).json()
    assert [item["name"] for item in by_name["items"]] == ["report 3"]
    assert api_client.get(BASE, params={"limit": 0}, headers=admin.headers).status_code == 422


def test_get_and_404(api_client, admin):
    task = new_task(api_client, admin).json()
    assert api_client.get(f"{BASE}/{task['id']}", headers=admin.headers).json()["name"] == task["name"]
    missing = api_client.get(f"{BASE}/987654", headers=admin.headers)
    assert missing.status_code == 404 and "987654" in missing.json()["error"]["message"]


def test_update_with_the_current_version_then_a_stale_one_is_409(api_client, admin):
    task = new_task(api_client, admin).json()
    url = f"{BASE}/{task['id']}"
    first = api_client.patch(
        url,
        json={"schedule": {"kind": "interval", "every": 1, "period": "hours"}},
        headers={**admin.headers, "If-Match": '"1"'},
    )
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 2 and first.headers["ETag"] == '"2"'
    assert first.json()["schedule"]["fields"] == {"every": 1, "period": "hours"}
    stale = api_client.patch(url, json={"description": "second admin", "version": 1}, headers=admin.headers)
    assert stale.status_code == 409 and "version 2, not 1" in stale.json()["error"]["message"]
    assert api_client.get(url, headers=admin.headers).json()["description"] == ""
    no_version = api_client.patch(url, json={"description": "blind"}, headers=admin.headers)
    assert no_version.status_code == 428


def test_enable_disable_delete_and_the_change_log(api_client, admin):
    task = new_task(api_client, admin).json()
    url = f"{BASE}/{task['id']}"
    disabled = api_client.post(f"{url}/disable", headers=admin.headers).json()
    assert disabled["enabled"] is False and disabled["next_run_at"] is None
    enabled = api_client.post(f"{url}/enable", headers=admin.headers).json()
    assert enabled["enabled"] is True and enabled["next_run_at"] is not None
    changes = api_client.get(f"{url}/changes", headers=admin.headers).json()
    assert [change["action"] for change in changes] == ["update", "update", "create"]
    assert changes[0]["changes"]["enabled"] == [False, True]
    assert changes[0]["actor_user_id"] == admin.user_id
    assert api_client.delete(url, headers={**admin.headers, "If-Match": '"1"'}).status_code == 409
    assert api_client.delete(url, headers=admin.headers).status_code == 204
    assert api_client.get(url, headers=admin.headers).status_code == 404
    assert api_client.get(f"{url}/changes", headers=admin.headers).json()[0]["action"] == "delete"


def test_run_now_sends_with_the_tasks_options_and_counts_it(api_client, admin, redis_clean):
    empty_broker()
    task = new_task(api_client, admin, name="run me", args=[7], kwargs={"k": "v"}, enabled=False).json()
    accepted = api_client.post(f"{BASE}/{task['id']}/run", headers=admin.headers)
    assert accepted.status_code == 202
    runs = queued_runs("run me")
    assert [(run["id"], run["args"], run["kwargs"]) for run in runs] == [(accepted.json()["task_id"], [7], {"k": "v"})]
    after = api_client.get(f"{BASE}/{task['id']}", headers=admin.headers).json()
    assert after["total_run_count"] == 1 and after["last_run_at"] is not None


def test_preview_lists_the_next_run_times(api_client, admin):
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    task = new_task(
        api_client, admin, start_time=start.isoformat(), schedule={"kind": "interval", "every": 1, "period": "hours"}
    ).json()
    preview = api_client.get(f"{BASE}/{task['id']}/preview", params={"count": 3}, headers=admin.headers).json()
    assert [datetime.fromisoformat(moment) for moment in preview["next_runs"]] == [
        start + timedelta(hours=hours) for hours in range(3)
    ]


def test_task_names_lists_registered_tasks(api_client, admin):
    names = api_client.get(f"{BASE}/task-names", headers=admin.headers).json()
    assert "erp.ping" in names and "erp.health_check" in names
    assert not any(name.startswith("celery.") for name in names)


def test_only_superusers_may_manage_schedules(api_client, clean_tables, make_user):
    member = make_user(role="admin")
    assert api_client.get(BASE, headers=member.headers).status_code == 403
    assert api_client.get(BASE).status_code == 401
    assert (
        api_client.get(BASE, headers={"Authorization": "Bearer erp_not-a-real-token-at-all-000000"}).status_code == 401
    )


def test_routing_to_a_real_queue_is_accepted(api_client, admin):
    for number, routing in enumerate(
        [{"queue": "reports"}, {"exchange": "celery", "routing_key": "celery"}, {"exchange": "nowhere"}]
    ):
        new_task(api_client, admin, name=f"routed {number}", **routing)


def test_enabling_a_task_disabled_for_a_week_continues_at_its_next_slot(api_client, admin, sync_engine):
    from sqlalchemy import text

    task = new_task(api_client, admin, schedule={"kind": "interval", "every": 1, "period": "hours"}).json()
    url = f"{BASE}/{task['id']}"
    api_client.post(f"{url}/disable", headers=admin.headers)
    with sync_engine.begin() as connection:
        connection.execute(
            text("UPDATE periodic_tasks SET last_run_at = now() - interval '7 days 30 minutes' WHERE id = :id"),
            {"id": task["id"]},
        )
    enabled = api_client.post(f"{url}/enable", headers=admin.headers).json()
    next_run = datetime.fromisoformat(enabled["next_run_at"])
    now = datetime.now(UTC)
    assert now <= next_run <= now + timedelta(minutes=31), "the next slot from now, not a week ago"
