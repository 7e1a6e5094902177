"""Local development without a worker: a real uvicorn in eager mode runs what it dispatches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.processes import REPO_ROOT, start_web

pytestmark = pytest.mark.e2e

EAGER = {"CELERY_TASK_ALWAYS_EAGER": "true", "ERP_ENVIRONMENT": "development"}


@pytest.fixture(scope="module")
def eager_web(migrated_database, redis_clean):
    web, url = start_web(env=EAGER)
    yield web, url
    code = web.stop()
    assert code == 0 or (code == -signal.SIGTERM and "Application shutdown complete" in web.output()), web.output()


def test_a_dispatched_task_has_run_in_the_web_process_when_the_answer_comes(eager_web, make_user):
    web, url = eager_web
    user = make_user()

    def ping_through_the_api(_: int) -> dict:
        with httpx.Client(base_url=url, headers=user.headers, timeout=30) as client:
            accepted = client.post("/api/v1/tasks/ping")
            assert accepted.status_code == 202, accepted.text
            return client.get(accepted.json()["status_url"]).json()

    # Side by side: each request's task runs in a thread beside the loop, one at a time.
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(ping_through_the_api, range(8)))
    assert [status["state"] for status in statuses] == ["SUCCESS"] * 8, statuses
    assert {status["result"]["worker_pid"] for status in statuses} == {web.process.pid}


def test_eager_mode_outside_development_stops_start_up_with_one_line(migrated_database):
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from erp.api.app import create_app; from erp.core.config import get_settings; get_settings()",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "CELERY_TASK_ALWAYS_EAGER": "true", "ERP_ENVIRONMENT": "production"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert run.stderr.strip().startswith("erp: configuration error: CELERY_TASK_ALWAYS_EAGER: ")
    assert "needs ERP_ENVIRONMENT=development" in run.stderr
