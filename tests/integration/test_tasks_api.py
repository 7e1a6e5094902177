"""`/api/v1/tasks`: dispatch, status, listing and revoking, with who-may-see-what."""

from __future__ import annotations

import time
import uuid

import pytest

from erp.core import task_owners
from erp.core.celery_app import celery_app
from tests.support.scheduling import wait_for


@pytest.fixture
def users(clean_tables, make_user):
    # User ids restart with the tables; owner records of earlier tests must not carry over.
    celery_app.backend.client.flushdb()
    owner = make_user(role="member", organization="Acme")
    colleague = make_user(role="member", organization="Acme")
    outsider = make_user(role="member", organization="Globex")
    superuser = make_user(role=None, superuser=True)
    return owner, colleague, outsider, superuser


def recorded_task(api_client, owner, state: str, result) -> str:
    """A task id owned by `owner` whose result the backend already holds."""
    task_id = str(uuid.uuid4())
    record = task_owners.TaskOwner(task_id, "erp.ping", owner.user_id, owner.organization_id, time.time())
    # On the app's event loop, where the owner store's pooled connections live.
    api_client.portal.call(task_owners.record_owner, record)
    if state == "FAILURE":
        celery_app.backend.mark_as_failure(
            task_id, result, traceback="Traceback (most recent call last):\n  ...\nValueError: boom"
        )
    else:
        celery_app.backend.store_result(task_id, result, state)
    return task_id


def test_dispatch_then_status_until_success(api_client, in_process_worker, users):
    owner = users[0]
    accepted = api_client.post("/api/v1/tasks/ping", headers=owner.headers)
    assert accepted.status_code == 202
    url = accepted.json()["status_url"]
    status = wait_for(
        lambda: (s := api_client.get(url, headers=owner.headers).json())["state"] == "SUCCESS" and s, timeout=20
    )
    assert status["result"]["pong"] is True and status["task_name"] == "erp.ping"
    assert status["created_at"] is not None and status["finished_at"] is not None


def test_who_may_read_a_task(api_client, users):
    owner, colleague, outsider, superuser = users
    task_id = recorded_task(api_client, owner, "SUCCESS", {"ok": 1})
    url = f"/api/v1/tasks/{task_id}"
    assert api_client.get(url, headers=owner.headers).json()["result"] == {"ok": 1}
    assert api_client.get(url, headers=colleague.headers).status_code == 200, "same organization"
    assert api_client.get(url, headers=superuser.headers).status_code == 200
    forbidden = api_client.get(url, headers=outsider.headers)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert api_client.get(url).status_code == 401


def test_an_id_nobody_started_is_404_not_pending(api_client, users):
    response = api_client.get(f"/api/v1/tasks/{uuid.uuid4()}", headers=users[0].headers)
    assert response.status_code == 404 and "was started through this API" in response.json()["error"]["message"]
    assert api_client.get("/api/v1/tasks/not-a-uuid", headers=users[0].headers).status_code == 422


def test_errors_show_type_and_message_and_the_traceback_only_to_superusers(api_client, users):
    owner, _, _, superuser = users
    task_id = recorded_task(api_client, owner, "FAILURE", ValueError("boom"))
    seen_by_owner = api_client.get(f"/api/v1/tasks/{task_id}", headers=owner.headers).json()
    assert seen_by_owner["state"] == "FAILURE"
    assert seen_by_owner["error"] == {"type": "ValueError", "message": "boom", "traceback": None}
    seen_by_superuser = api_client.get(f"/api/v1/tasks/{task_id}", headers=superuser.headers).json()
    assert "Traceback" in seen_by_superuser["error"]["traceback"]


def test_progress_comes_from_the_progress_meta(api_client, users):
    task_id = recorded_task(api_client, users[0], "PROGRESS", {"done": 3, "total": 10})
    body = api_client.get(f"/api/v1/tasks/{task_id}", headers=users[0].headers).json()
    assert (body["state"], body["progress"], body["result"]) == ("PROGRESS", {"done": 3, "total": 10}, None)


def test_list_shows_the_callers_recent_tasks_newest_first(api_client, users):
    owner, colleague = users[0], users[1]
    first = recorded_task(api_client, owner, "SUCCESS", 1)
    time.sleep(0.01)
    second = recorded_task(api_client, owner, "SUCCESS", 2)
    recorded_task(api_client, colleague, "SUCCESS", 3)
    listed = api_client.get("/api/v1/tasks", headers=owner.headers).json()["items"]
    assert [item["task_id"] for item in listed] == [second, first]
    assert (
        api_client.get("/api/v1/tasks", params={"limit": 1}, headers=owner.headers).json()["items"][0]["task_id"]
        == second
    )


def test_revoke_is_for_the_owner_and_superusers(api_client, users):
    owner, _, outsider, superuser = users
    task_id = recorded_task(api_client, owner, "PENDING", None)
    assert api_client.post(f"/api/v1/tasks/{task_id}/revoke", headers=outsider.headers).status_code == 403
    assert api_client.post(f"/api/v1/tasks/{task_id}/revoke", headers=owner.headers).status_code == 202
    assert api_client.post(f"/api/v1/tasks/{task_id}/revoke", headers=superuser.headers).status_code == 202
