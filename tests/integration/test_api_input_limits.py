"""Input the database cannot store is a 422 naming the field, never a 500; nothing is written.

Each case here was a plain-text 500 before the shared input types (erp.core.input_types):
integers beyond BIGINT (ids, offset, X-Organization-Id) or INTEGER (the schedule tables' ids,
expire_seconds), and the NUL character (or an unpaired surrogate) in any stored text or
anywhere in the JSON stored as jsonb.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from erp.models import Base

PERIODIC = "/api/v1/admin/periodic-tasks"
BEYOND_INT64 = 2**63
BEYOND_INT32 = 2**31
NUL = "a\x00b"


@pytest.fixture
def superuser(clean_tables, make_user):
    return make_user(role="admin", superuser=True)


@pytest.fixture
def periodic_task(api_client, superuser):
    body = {"name": "existing", "task": "erp.ping", "schedule": {"kind": "interval", "every": 10}}
    response = api_client.post(PERIODIC, json=body, headers=superuser.headers)
    assert response.status_code == 201, response.text
    return response.json()


def row_counts(sync_engine) -> dict[str, int]:
    with sync_engine.connect() as connection:
        return {
            table.name: connection.execute(text(f'SELECT count(*) FROM "{table.name}"')).scalar_one()
            for table in Base.metadata.sorted_tables
            if table.name != "beat_heartbeats"
        }


def assert_refused(response, location: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert location in [item["location"] for item in error["details"]], error


BIG = str(BEYOND_INT64)


@pytest.mark.parametrize(
    ("method", "path", "options", "location"),
    [
        ("GET", f"{PERIODIC}/{BIG}", {}, "path.periodic_task_id"),
        ("PATCH", f"{PERIODIC}/{BIG}", {"json": {"version": 1}}, "path.periodic_task_id"),
        ("DELETE", f"{PERIODIC}/{BIG}", {}, "path.periodic_task_id"),
        ("POST", f"{PERIODIC}/{BIG}/enable", {}, "path.periodic_task_id"),
        ("POST", f"{PERIODIC}/{BIG}/disable", {}, "path.periodic_task_id"),
        ("POST", f"{PERIODIC}/{BIG}/run", {}, "path.periodic_task_id"),
        ("GET", f"{PERIODIC}/{BIG}/preview", {}, "path.periodic_task_id"),
        ("GET", f"{PERIODIC}/{BIG}/changes", {}, "path.periodic_task_id"),
        ("GET", f"{PERIODIC}/1/changes", {"params": {"offset": BIG}}, "query.offset"),
        ("GET", PERIODIC, {"params": {"offset": BIG}}, "query.offset"),
        ("DELETE", f"/api/v1/me/tokens/{BIG}", {}, "path.token_id"),
        ("POST", f"/api/v1/admin/organizations/{BIG}/members", {"json": {"user_id": 1}}, "path.organization_id"),
        ("POST", "/api/v1/admin/organizations/1/members", {"json": {"user_id": BEYOND_INT64}}, "body.user_id"),
        ("POST", f"/api/v1/admin/users/{BIG}/tokens", {"json": {"name": "t"}}, "path.user_id"),
        ("POST", "/api/v1/tasks/ping", {"headers": {"X-Organization-Id": BIG}}, "header.x-organization-id"),
        ("GET", "/api/v1/tasks", {"headers": {"X-Organization-Id": BIG}}, "header.x-organization-id"),
        ("GET", f"/api/v1/admin/users/{BIG}/tokens", {}, "path.user_id"),
        ("DELETE", f"/api/v1/admin/users/1/tokens/{BIG}", {}, "path.token_id"),
        ("POST", f"/api/v1/admin/users/{BIG}/deactivate", {}, "path.user_id"),
        ("DELETE", f"/api/v1/admin/organizations/1/members/{BIG}", {}, "path.user_id"),
        ("GET", "/api/v1/admin/account-changes", {"params": {"user_id": BIG}}, "query.user_id"),
        ("GET", "/api/v1/admin/account-changes", {"params": {"offset": BIG}}, "query.offset"),
    ],
)
def test_integers_beyond_bigint_are_a_422_naming_the_parameter(api_client, superuser, method, path, options, location):
    headers = {**superuser.headers, **options.pop("headers", {})}
    assert_refused(api_client.request(method, path, headers=headers, **options), location)


@pytest.mark.parametrize("column", ["interval_id", "crontab_id", "clocked_id", "solar_id"])
def test_schedule_ids_beyond_integer_are_a_422_on_create_and_update(api_client, superuser, periodic_task, column):
    body = {"name": "by reference", "task": "erp.ping", column: BEYOND_INT32}
    assert_refused(api_client.post(PERIODIC, json=body, headers=superuser.headers), f"body.{column}")
    patch = {"version": periodic_task["version"], column: BEYOND_INT32}
    response = api_client.patch(f"{PERIODIC}/{periodic_task['id']}", json=patch, headers=superuser.headers)
    assert_refused(response, f"body.{column}")


def test_expire_seconds_beyond_integer_is_a_422(api_client, superuser):
    body = {"name": "n", "task": "erp.ping", "schedule": {"kind": "interval", "every": 1}}
    response = api_client.post(PERIODIC, json={**body, "expire_seconds": BEYOND_INT32}, headers=superuser.headers)
    assert_refused(response, "body.expire_seconds")


def test_the_largest_ids_are_accepted_and_simply_not_found(api_client, superuser):
    assert api_client.get(f"{PERIODIC}/{2**63 - 1}", headers=superuser.headers).status_code == 404
    body = {"name": "n", "task": "erp.ping", "interval_id": 2**31 - 1}
    response = api_client.post(PERIODIC, json=body, headers=superuser.headers)
    assert response.status_code == 422 and "does not exist" in response.json()["error"]["message"]


TASK = {"name": "n", "task": "erp.ping", "schedule": {"kind": "interval", "every": 10}}
CRONTAB = {"kind": "crontab", "minute": "0", "hour": "*", "timezone": "UTC"}


@pytest.mark.parametrize(
    ("path", "body", "location"),
    [
        ("/api/v1/admin/organizations", {"name": NUL}, "body.name"),
        ("/api/v1/admin/users", {"email": f"{NUL}@example.com"}, "body.email"),
        ("/api/v1/admin/users", {"email": "ada@example.com", "full_name": NUL}, "body.full_name"),
        ("/api/v1/me/tokens", {"name": NUL}, "body.name"),
        ("/api/v1/admin/users/{user_id}/tokens", {"name": NUL}, "body.name"),
        (PERIODIC, {**TASK, "name": NUL}, "body.name"),
        (PERIODIC, {**TASK, "task": NUL}, "body.task"),
        (PERIODIC, {**TASK, "description": NUL}, "body.description"),
        (PERIODIC, {**TASK, "queue": NUL}, "body.queue"),
        (PERIODIC, {**TASK, "exchange": NUL}, "body.exchange"),
        (PERIODIC, {**TASK, "routing_key": NUL}, "body.routing_key"),
        (PERIODIC, {**TASK, "schedule": {**CRONTAB, "minute": NUL}}, "body.schedule.crontab.minute"),
        (PERIODIC, {**TASK, "schedule": {**CRONTAB, "day_of_week": NUL}}, "body.schedule.crontab.day_of_week"),
        (PERIODIC, {**TASK, "schedule": {**CRONTAB, "timezone": NUL}}, "body.schedule.crontab.timezone"),
        (PERIODIC, {**TASK, "args": [1, {"deep": [NUL]}]}, "body.args"),
        (PERIODIC, {**TASK, "kwargs": {"key": {"inner": NUL}}}, "body.kwargs"),
        (PERIODIC, {**TASK, "kwargs": {NUL: 1}}, "body.kwargs"),
        (PERIODIC, {**TASK, "headers": {"trace": NUL}}, "body.headers"),
    ],
)
def test_nul_in_stored_text_is_a_422_naming_the_field_and_nothing_is_written(
    api_client, superuser, sync_engine, path, body, location
):
    before = row_counts(sync_engine)
    response = api_client.post(path.format(user_id=superuser.user_id), json=body, headers=superuser.headers)
    assert_refused(response, location)
    assert "NUL" in response.json()["error"]["message"]
    assert row_counts(sync_engine) == before


def test_nul_in_an_update_is_a_422_and_the_task_is_unchanged(api_client, superuser, periodic_task):
    url = f"{PERIODIC}/{periodic_task['id']}"
    for field, value in [("description", NUL), ("args", [NUL]), ("schedule", {**CRONTAB, "hour": NUL})]:
        response = api_client.patch(url, json={"version": 1, field: value}, headers=superuser.headers)
        assert response.status_code == 422, response.text
    assert api_client.get(url, headers=superuser.headers).json() == periodic_task


@pytest.mark.parametrize("parameter", ["name", "task"])
def test_nul_in_a_list_filter_is_a_422(api_client, superuser, parameter):
    response = api_client.get(PERIODIC, params={parameter: NUL}, headers=superuser.headers)
    assert_refused(response, f"query.{parameter}")


def test_unpaired_surrogates_and_non_finite_numbers_are_a_422(api_client, superuser, sync_engine):
    before = row_counts(sync_engine)
    headers = {**superuser.headers, "Content-Type": "application/json"}
    # JSON can spell an unpaired surrogate; it is not text PostgreSQL (or UTF-8) can hold.
    response = api_client.post("/api/v1/admin/organizations", content=b'{"name": "x\\ud800"}', headers=headers)
    assert_refused(response, "body.name")
    # Python's JSON reader accepts NaN and Infinity; jsonb does not.
    content = b'{"name": "n", "task": "erp.ping", "schedule": {"kind": "interval", "every": 1}, "args": [NaN]}'
    assert_refused(api_client.post(PERIODIC, content=content, headers=headers), "body.args")
    # A key that is not even valid text is named readably, and the answer is still JSON.
    content = b'{"name": "n", "task": "erp.ping", "schedule": {"kind": "interval", "every": 1}, "\\udc00": 1}'
    response = api_client.post(PERIODIC, content=content, headers=headers)
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"
    assert row_counts(sync_engine) == before


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        # Its UTC value is before year 1: asyncpg could not pass it (a 500 before).
        ({"start_time": "0001-01-01T00:00:00+14:00"}, "body.start_time"),
        ({"expires": "0001-01-01T00:00:00+14:00"}, "body.expires"),
        (
            {"schedule": {"kind": "clocked", "clocked_time": "9999-12-31T23:59:59-14:00"}},
            "body.schedule.clocked.clocked_time",
        ),
        # Accepted before, and beyond what schedule arithmetic can reach.
        ({"start_time": "9999-12-31T00:00:00+00:00"}, "body.start_time"),
        ({"start_time": "1969-12-31T23:59:59+00:00"}, "body.start_time"),
    ],
)
def test_datetimes_outside_1970_to_2999_are_a_422_naming_the_field(
    api_client, superuser, sync_engine, overrides, location
):
    before = row_counts(sync_engine)
    response = api_client.post(PERIODIC, json={**TASK, **overrides}, headers=superuser.headers)
    assert_refused(response, location)
    assert "between 1970-01-01" in response.json()["error"]["message"]
    assert row_counts(sync_engine) == before


def test_a_preview_stops_at_the_last_run_that_can_be_computed(api_client, superuser):
    # The longest interval allowed (100 years), starting late: its runs reach past the year 9999.
    body = {
        **TASK,
        "start_time": "2999-12-31T00:00:00Z",
        "schedule": {"kind": "interval", "every": 36500, "period": "days"},
    }
    created = api_client.post(PERIODIC, json=body, headers=superuser.headers)
    assert created.status_code == 201, created.text
    preview = api_client.get(
        f"{PERIODIC}/{created.json()['id']}/preview", params={"count": 100}, headers=superuser.headers
    )
    assert preview.status_code == 200, preview.text
    runs = preview.json()["next_runs"]
    assert runs[0] == "2999-12-31T00:00:00Z" and 1 < len(runs) < 100
    assert runs[-1] < "9999-12-31"


@pytest.mark.parametrize(
    "schedule",
    [
        {"kind": "interval", "every": 5_000_000, "period": "days"},  # the next run is past year 9999
        {"kind": "interval", "every": 10**9, "period": "days"},  # more days than a timedelta holds
    ],
)
def test_a_schedule_whose_next_run_cannot_be_computed_is_a_422(api_client, superuser, sync_engine, schedule):
    before = row_counts(sync_engine)
    body = {**TASK, "start_time": "1970-01-01T00:00:00Z", "schedule": schedule}
    response = api_client.post(PERIODIC, json=body, headers=superuser.headers)
    assert response.status_code == 422, response.text
    assert row_counts(sync_engine) == before
