"""End to end: the real web, worker and beat processes, as the Procfile starts them."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from tests.support.processes import PRODUCT_TASKS, ManagedProcess, free_port, start_beat, start_web, start_worker
from tests.support.scheduling import empty_broker, wait_for

# Alone (serial): beat must fire within seconds, a 503 come within half a second.
pytestmark = [pytest.mark.e2e, pytest.mark.serial]


def stopped_cleanly(process: ManagedProcess) -> bool:
    """Exit 0; uvicorn re-raises SIGTERM after its graceful shutdown, so -SIGTERM is clean too."""
    code = process.stop()
    return code == 0 or (code == -signal.SIGTERM and "Application shutdown complete" in process.output())


@pytest.fixture(scope="module")
def stack(migrated_database, redis_clean):
    """uvicorn, a prefork worker and beat on free ports; each must stop cleanly (exit 0)."""
    empty_broker()
    web, url = start_web()
    worker = start_worker("--concurrency", "2")
    beat = start_beat()
    yield {"url": url, "web": web, "worker": worker, "beat": beat}
    unclean = [process for process in (web, worker, beat) if not stopped_cleanly(process)]
    assert not unclean, "\n".join(f"{p.name} did not stop cleanly:\n{p.output()[-3000:]}" for p in unclean)


def test_the_worker_finds_every_task_of_the_product(stack):
    """`celery -A erp.core.celery_app worker` lists its tasks at start ([tasks], at INFO)."""
    banner = stack["worker"].output()
    missing = [name for name in PRODUCT_TASKS if f". {name}\n" not in banner]
    assert not missing, banner[-3000:]


def test_ping_over_http_comes_back_success(stack, clean_tables, make_user):
    user = make_user()
    with httpx.Client(base_url=stack["url"], headers=user.headers, timeout=10) as client:
        accepted = client.post("/api/v1/tasks/ping")
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["status_url"] == f"/api/v1/tasks/{body['task_id']}"
        status = wait_for(lambda: (s := client.get(body["status_url"]).json())["state"] == "SUCCESS" and s, timeout=20)
    assert status["result"]["pong"] is True and status["task_name"] == "erp.ping"


def test_a_schedule_created_over_http_is_fired_by_beat_and_run_by_the_worker(stack, clean_tables, make_user):
    admin = make_user(role=None, superuser=True)
    with httpx.Client(base_url=stack["url"], headers=admin.headers, timeout=10) as client:
        created = client.post(
            "/api/v1/admin/periodic-tasks",
            json={"name": "e2e every second", "task": "erp.health_check", "schedule": {"kind": "interval", "every": 1}},
        )
        assert created.status_code == 201, created.text
        url = f"/api/v1/admin/periodic-tasks/{created.json()['id']}"
        fired = wait_for(lambda: (t := client.get(url).json())["total_run_count"] >= 2 and t, timeout=15)
    assert fired["last_run_at"] is not None
    stack["worker"].wait_for_output("periodic health check: healthy=", timeout=20)


def test_health_endpoints(stack):
    ready = httpx.get(f"{stack['url']}/health/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgresql": "up", "redis": "up"}
    beat = wait_for(
        lambda: (r := httpx.get(f"{stack['url']}/health/beat", timeout=5)).status_code == 200 and r, timeout=15
    )
    assert beat.json() == {"status": "ok", "beat": "up"}


def test_without_redis_dispatch_is_a_quick_503_and_the_api_keeps_answering(migrated_database, clean_tables, make_user):
    """A web process whose Redis is gone: no hung requests, no stalled event loop."""
    user = make_user()
    web, url = start_web(env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}"})
    try:
        with httpx.Client(base_url=url, headers=user.headers, timeout=15) as client:
            started = time.monotonic()
            response = client.post("/api/v1/tasks/ping")
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert "task queue is unavailable" in response.json()["error"]["message"]
            assert elapsed < 5
            ready = client.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "down"
            # While a dispatch waits on the missing broker, other requests are served at once.
            with httpx.Client(base_url=url, headers=user.headers, timeout=15) as other:
                slow = threading.Thread(target=lambda: client.post("/api/v1/tasks/ping"))
                slow.start()
                time.sleep(0.2)
                started = time.monotonic()
                assert other.get("/health/live").status_code == 200
                assert time.monotonic() - started < 0.5
                slow.join()
    finally:
        assert stopped_cleanly(web)


def test_a_request_that_walks_a_long_schedule_does_not_hold_up_the_others(stack, clean_tables, make_user):
    """A backfill walks up to a thousand solar slots (about a millisecond each): that work runs
    beside the event loop, so the web process keeps answering other requests meanwhile."""
    admin = make_user(role=None, superuser=True)
    with httpx.Client(base_url=stack["url"], headers=admin.headers, timeout=30) as client:
        created = client.post(
            "/api/v1/admin/periodic-tasks",
            json={
                "name": "e2e solar",
                "task": "erp.ping",
                "schedule": {"kind": "solar", "event": "dusk_astronomical", "latitude": 78.2, "longitude": 15.6},
                "enabled": False,
            },
        )
        assert created.status_code == 201, created.text
        backfill_url = f"/api/v1/admin/periodic-tasks/{created.json()['id']}/backfill"
        answers: list[httpx.Response] = []

        def backfill() -> None:
            body = {"from": "2000-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
            answers.append(client.post(backfill_url, json=body))

        walker = threading.Thread(target=backfill)
        walker.start()
        live_answers = 0
        with httpx.Client(base_url=stack["url"], timeout=30) as other:
            while walker.is_alive():
                assert other.get("/health/live").status_code == 200
                live_answers += walker.is_alive()  # answered while the backfill was still running
                time.sleep(0.02)
        walker.join()
    assert live_answers >= 5, f"{live_answers} other requests answered while the backfill ran"
    assert answers[0].status_code == 422 and "more than 1000" in answers[0].json()["error"]["message"]
