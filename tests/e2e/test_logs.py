"""Logs of the real web and worker processes: JSON lines, request ids that follow the task, no secrets."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.support.processes import start_web, start_worker
from tests.support.scheduling import empty_broker, wait_for

pytestmark = pytest.mark.e2e


def json_lines(output: str) -> list[dict]:
    """The lines that are JSON objects (the worker's banner, printed by Celery itself, is not)."""
    records = []
    for line in output.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def test_request_id_reaches_the_worker_and_no_secret_reaches_any_log(migrated_database, clean_tables, make_user):
    empty_broker()
    user = make_user()
    metrics_token = f"metrics-{uuid.uuid4().hex}"
    redis_password = f"pw-{uuid.uuid4().hex}"
    env = {"LOG_FORMAT": "json", "METRICS_TOKEN": metrics_token}
    worker = start_worker("--concurrency", "1", env=env)
    web, url = start_web(env=env)
    request_id = f"checkout-{uuid.uuid4().hex[:12]}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            accepted = client.post("/api/v1/tasks/ping", headers={**user.headers, "X-Request-ID": request_id})
            assert accepted.status_code == 202, accepted.text
            assert accepted.headers["X-Request-ID"] == request_id
            task_id = accepted.json()["task_id"]
            # Tokens in the query string, where they end up in access logs.
            status_url = f"{accepted.json()['status_url']}?access_token={user.token}&api_key={user.token}"
            wait_for(lambda: client.get(status_url, headers=user.headers).json()["state"] == "SUCCESS", timeout=20)
            # A wrong token in a header, a metrics token in the query string, a URL with a password.
            assert client.get("/api/v1/tasks", headers={"Authorization": f"Bearer erp_{'x' * 40}"}).status_code == 401
            client.get(f"/metrics?token={metrics_token}")
            client.get(f"/health/live?next=redis://:{redis_password}@example.com:6379/0")
            # A request id that is not well-formed is replaced by one of ours.
            replaced = client.get("/health/live", headers={"X-Request-ID": "x" * 300})
            assert replaced.headers["X-Request-ID"] != "x" * 300 and len(replaced.headers["X-Request-ID"]) == 32
    finally:
        web.stop()
        worker.stop()
    web_output, worker_output = web.output(), worker.output()

    for name, output in (("web", web_output), ("worker", worker_output)):
        for secret in (user.token, metrics_token, redis_password):
            assert secret not in output, f"a secret reached the {name} log:\n{output[-3000:]}"

    web_records = json_lines(web_output)
    # Every line of the web process is one JSON object, the access log included.
    assert len(web_records) == len([line for line in web_output.splitlines() if line.strip()])
    access = [r for r in web_records if r["logger"] == "uvicorn.access"]
    status_lines = [r for r in access if f"/api/v1/tasks/{task_id}?" in r["message"]]
    assert status_lines and all("access_token=[redacted]" in r["message"] for r in status_lines), access
    assert all("api_key=[redacted]" in r["message"] for r in status_lines)
    dispatch_lines = [r for r in access if "POST /api/v1/tasks/ping" in r["message"]]
    assert [r["request_id"] for r in dispatch_lines] == [request_id]

    task_lines = [r for r in json_lines(worker_output) if r.get("task_id") == task_id]
    assert task_lines, worker_output[-3000:]
    assert all(r["request_id"] == request_id and r["task_name"] == "erp.ping" for r in task_lines)
    assert any("succeeded" in r["message"] for r in task_lines)


def test_a_token_in_the_query_string_is_masked_in_uvicorns_access_log(migrated_database, clean_tables, make_user):
    """Issue 9, item 15: `?access_token=...` was written in full by uvicorn's access log."""
    user = make_user()
    web, url = start_web()
    try:
        response = httpx.get(f"{url}/api/v1/tasks?access_token={user.token}", headers=user.headers, timeout=10)
        assert response.status_code == 200
    finally:
        web.stop()
    output = web.output()
    assert "GET /api/v1/tasks?access_token=" in output
    assert user.token not in output, output[-2000:]
