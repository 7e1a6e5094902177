"""/metrics with several uvicorn workers: every process's requests are counted, whichever answers."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.test_procfile import sample
from tests.support.processes import start_web

pytestmark = pytest.mark.e2e


def test_http_figures_add_up_over_all_web_workers(migrated_database):
    token = f"scrape-{uuid.uuid4().hex}"
    web, url = start_web("--workers", "2", env={"METRICS_TOKEN": token}, factory="tests.support.slow_app:create_app")
    try:
        web.wait_for_output("Application startup complete", timeout=30)  # the second worker too
        pids = set()
        for _ in range(40):
            # A new connection each time, so the kernel hands them to either worker.
            pids.add(httpx.get(f"{url}/test/pid", timeout=5).json()["pid"])
        scrapes = [
            httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5).text for _ in range(6)
        ]
    finally:
        web.stop()
    assert len(pids) == 2, "both workers answered"
    for text in scrapes:
        assert sample(text, "http_requests_total", method="GET", route="/test/pid", status="200") == 40
        assert sample(text, "http_request_duration_seconds_count", method="GET", route="/test/pid") == 40
