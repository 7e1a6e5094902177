"""The Procfile's own command lines, started by honcho as `scripts/dev` does, serving /health/ready and /metrics."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
import sqlalchemy

from tests.support.processes import PRODUCT_TASKS
from tests.support.procfile import start_honcho
from tests.support.scheduling import empty_broker, wait_for

pytestmark = pytest.mark.e2e


def sample(text: str, metric: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus' text format, or None."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{metric}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(2))
    return None


def test_honcho_starts_web_worker_and_beat_from_the_procfile(migrated_database, clean_tables, make_user, sync_engine):
    empty_broker()
    user = make_user()
    metrics_token = f"scrape-{uuid.uuid4().hex}"
    honcho, port = start_honcho("web", "worker", "beat", env={"METRICS_TOKEN": metrics_token})
    url = f"http://127.0.0.1:{port}"
    scrape = {"Authorization": f"Bearer {metrics_token}"}
    try:
        honcho.wait_for_output("Application startup complete", timeout=60)
        honcho.wait_for_output("ready.", timeout=60)  # the worker
        honcho.wait_for_output("beat: Starting", timeout=60)
        # The Procfile's worker finds every task, and its beat the product's periodic jobs,
        # declared next to their tasks (the alerts' only with webhooks configured).
        missing = [name for name in PRODUCT_TASKS if f". {name}\n" not in honcho.output()]
        assert not missing, honcho.output()[-3000:]

        def from_config() -> set[str]:
            with sync_engine.connect() as connection:
                return set(
                    connection.execute(sqlalchemy.text("SELECT name FROM periodic_tasks WHERE from_config")).scalars()
                )

        assert wait_for(lambda: from_config() or None, timeout=30) == {"erp.health_check", "erp.prune_expired_files"}
        ready = httpx.get(f"{url}/health/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"] == {"postgresql": "up", "redis": "up"}

        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 401
        # Task figures live in Redis and count every run of the suite: compare with a first scrape.
        before = httpx.get(f"{url}/metrics", headers=scrape, timeout=5).text
        succeeded_before = sample(before, "celery_task_succeeded_total", name="erp.ping", queue_name="celery") or 0
        runs_before = sample(before, "celery_task_runtime_count", name="erp.ping", queue_name="celery") or 0
        with httpx.Client(base_url=url, headers=user.headers, timeout=10) as client:
            accepted = client.post("/api/v1/tasks/ping")
            assert accepted.status_code == 202
            wait_for(lambda: client.get(accepted.json()["status_url"]).json()["state"] == "SUCCESS", timeout=30)

        def scraped() -> str | None:
            response = httpx.get(f"{url}/metrics", headers=scrape, timeout=5)
            assert response.status_code == 200, response.text
            text = response.text
            # The task figure comes from the worker, through Redis; the heartbeat from beat, through PostgreSQL.
            done = sample(text, "celery_task_succeeded_total", name="erp.ping", queue_name="celery") or 0
            return (
                text if done > succeeded_before and sample(text, "erp_beat_heartbeat_age_seconds") is not None else None
            )

        text = wait_for(scraped, timeout=30, interval=0.5, message="worker and beat figures in /metrics")
    finally:
        honcho.stop()
    assert text is not None
    assert sample(text, "http_requests_total", method="POST", route="/api/v1/tasks/ping", status="202") == 1
    assert sample(text, "http_request_duration_seconds_count", method="GET", route="/api/v1/tasks/{task_id}")
    assert sample(text, "celery_task_succeeded_total", name="erp.ping", queue_name="celery") == succeeded_before + 1
    assert sample(text, "celery_task_runtime_count", name="erp.ping", queue_name="celery") == runs_before + 1
    assert sample(text, "celery_queue_length", queue_name="celery") is not None
    assert sample(text, "erp_beat_heartbeat_age_seconds") < 30
    assert metrics_token not in honcho.output()
