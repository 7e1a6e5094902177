"""End to end: the real web, worker and beat processes, as the Procfile starts them."""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.integration.scheduling import empty_broker, get_task, wait_for
from tests.processes import ManagedProcess, free_port, start_beat, start_worker

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(migrated_database, redis_clean):
    """uvicorn, a prefork worker and beat on free ports; stopped cleanly (exit 0) at the end."""
    empty_broker()
    port = free_port()
    web = ManagedProcess(
        "web", [sys.executable, "-m", "uvicorn", "--factory", "erp.api.app:create_app", "--host", "127.0.0.1", "--port", str(port)]
    )
    worker = start_worker("--concurrency", "2")
    beat = start_beat()
    web.wait_for_output("Application startup complete", timeout=30)
    yield {"url": f"http://127.0.0.1:{port}", "web": web, "worker": worker, "beat": beat}
    for process in (web, worker, beat):
        assert process.stop() == 0, f"{process.name} did not stop cleanly:\n{process.output()[-3000:]}"


def test_ping_over_http_comes_back_success(stack):
    with httpx.Client(base_url=stack["url"], timeout=10) as client:
        accepted = client.post("/api/v1/tasks/ping")
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["status_url"] == f"/api/v1/tasks/{body['task_id']}"
        status = wait_for(
            lambda: (s := client.get(body["status_url"]).json())["state"] == "SUCCESS" and s, timeout=20
        )
    assert status["result"]["pong"] is True
    assert status["task_name"] == "erp.ping"


def test_readiness_reports_both_dependencies(stack):
    response = httpx.get(f"{stack['url']}/health/ready", timeout=5)
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgresql": "ok", "redis": "ok"}


def test_beat_fires_the_configured_health_check_and_the_worker_runs_it(stack, sync_engine):
    row = wait_for(lambda: (r := get_task(sync_engine, "erp.health_check")).total_run_count >= 1 and r, timeout=20)
    assert row.last_run_at is not None
    stack["worker"].wait_for_output("periodic health check: database ok=True", timeout=20)
