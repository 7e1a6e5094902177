"""Alerts from the run ledger: delivered to a real HTTP server on 127.0.0.1 by `erp.deliver_alerts`
(called directly and through a real worker), retried with back-off, given up, listed by the API."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import text

from erp.core.celery_app import celery_config
from erp.core.config import get_settings
from erp.tasks.worker import alert_delivery
from tests.support.environment import use_test_environment
from tests.support.processes import start_worker
from tests.support.scheduling import empty_broker

URL = "/api/v1/admin/alerts"


class Webhook:
    """A webhook on 127.0.0.1 that records every post and answers with the statuses it is given
    (the last one repeated)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.posts: list[dict] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.posts.append(body)
                status = webhook.statuses[min(len(webhook.posts), len(webhook.statuses)) - 1]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/secret-part"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def admin(clean_tables, make_user):
    return make_user(superuser=True)


def add_alert(engine, kind: str = "failure", name: str | None = "nightly", **fields) -> int:
    with engine.begin() as connection:
        return connection.execute(
            text(
                "INSERT INTO periodic_task_alerts (kind, periodic_task_id, periodic_task_name, run_id, message)"
                " VALUES (:kind, :task_id, :name, :run_id, :message) RETURNING id"
            ),
            {
                "kind": kind,
                "task_id": fields.get("periodic_task_id", 7),
                "name": name,
                "run_id": fields.get("run_id"),
                "message": fields.get("message", f"{name}: the run failed: ValueError: boom"),
            },
        ).scalar_one()


def alert_row(engine, alert_id: int):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT *, next_attempt_at - now() AS wait FROM periodic_task_alerts WHERE id = :id"), {"id": alert_id}
        ).one()


def make_due(engine) -> None:
    """As if the back-off had passed."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE periodic_task_alerts SET next_attempt_at = now() WHERE delivered_at IS NULL"))


@pytest.fixture
def deliver(sync_engine) -> Iterator:
    with httpx.Client(timeout=5) as client:

        def run(urls: list[str], max_attempts: int = 5) -> alert_delivery.DeliveryReport:
            return alert_delivery.deliver_pending(sync_engine, client, urls, max_attempts=max_attempts)

        yield run


def test_an_alert_is_posted_as_slack_compatible_json_and_retried_after_a_failure(admin, sync_engine, deliver):
    first = add_alert(sync_engine, run_id=41)
    second = add_alert(sync_engine, kind="stopped_firing", name="sync", message="sync: stopped firing, broken: x")
    with Webhook([500, 200]) as webhook:
        report = deliver([webhook.url])
        assert (report.delivered, report.failed, report.given_up) == (1, 1, 0)
        failed = alert_row(sync_engine, first)
        assert (failed.delivered_at, failed.attempts) == (None, 1)
        # The error names the host, never the webhook's secret path.
        assert failed.last_error == "http://127.0.0.1: HTTP 500" and "secret" not in failed.last_error
        assert timedelta(seconds=14) < failed.wait <= timedelta(seconds=30), "first back-off: 15 to 30 s"
        assert alert_row(sync_engine, second).delivered_at is not None

        assert deliver([webhook.url]).delivered == 0, "not before its back-off has passed"
        make_due(sync_engine)
        assert deliver([webhook.url]).delivered == 1
    delivered = alert_row(sync_engine, first)
    assert delivered.delivered_at is not None and delivered.attempts == 2 and delivered.last_error is None
    assert webhook.posts[0] == {
        "text": "[erp] nightly failed: nightly: the run failed: ValueError: boom",
        "kind": "failure",
        "alert_id": first,
        "periodic_task_id": 7,
        "periodic_task_name": "nightly",
        "run_id": 41,
        "message": "nightly: the run failed: ValueError: boom",
        "created_at": failed.created_at.isoformat(),
    }
    assert webhook.posts[1]["text"] == "[erp] sync stopped firing: sync: stopped firing, broken: x"
    assert [post["alert_id"] for post in webhook.posts] == [first, second, first]


def test_an_alert_is_given_up_after_the_last_attempt_and_stays_listed_with_its_error(
    api_client, admin, sync_engine, deliver
):
    alert_id = add_alert(sync_engine)
    with Webhook([503]) as webhook:
        for _ in range(3):
            deliver([webhook.url], max_attempts=2)
            make_due(sync_engine)
        assert len(webhook.posts) == 2, "no third attempt"
    listed = api_client.get(URL, params={"delivered": False}, headers=admin.headers).json()["items"]
    assert [(item["id"], item["attempts"], item["last_error"]) for item in listed] == [
        (alert_id, 2, "http://127.0.0.1: HTTP 503")
    ]


def test_every_url_must_accept_an_alert_and_an_unreachable_one_is_an_error(admin, sync_engine, deliver):
    alert_id = add_alert(sync_engine)
    with Webhook([200]) as webhook:
        # Nothing listens on port 9 of 127.0.0.1 (discard): the connection is refused.
        report = deliver([webhook.url, "http://127.0.0.1:9/hook"])
    assert report.failed == 1 and len(webhook.posts) == 1
    assert alert_row(sync_engine, alert_id).last_error.startswith("http://127.0.0.1: ConnectError")


def test_without_webhooks_alerts_are_only_listed(admin, sync_engine, deliver):
    alert_id = add_alert(sync_engine)
    assert deliver([]).delivered == 0
    assert alert_row(sync_engine, alert_id).attempts == 0


@pytest.fixture
def webhook_settings():
    """ALERT_WEBHOOK_URLS set for this test only."""

    def configure(urls: str) -> None:
        os.environ["ALERT_WEBHOOK_URLS"] = urls
        get_settings.cache_clear()

    yield configure
    os.environ.pop("ALERT_WEBHOOK_URLS", None)
    use_test_environment()


def test_the_task_reads_its_webhooks_from_the_settings_and_runs_on_a_real_worker(
    admin, sync_engine, webhook_settings, in_process_worker
):
    add_alert(sync_engine)
    add_alert(sync_engine, kind="auto_pause")
    with Webhook([200]) as webhook:
        webhook_settings(webhook.url)
        assert alert_delivery.deliver_alerts.delay().get(timeout=20) == {"delivered": 2, "failed": 0, "given_up": 0}
    assert sorted(post["kind"] for post in webhook.posts) == ["auto_pause", "failure"]


def test_beat_delivers_alerts_only_when_webhooks_are_configured(webhook_settings):
    assert "erp.deliver_alerts" not in celery_config(get_settings())["beat_schedule"]
    webhook_settings("https://hooks.example.com/a, https://hooks.example.com/b")
    entry = celery_config(get_settings())["beat_schedule"]["erp.deliver_alerts"]
    assert entry == {"task": "erp.deliver_alerts", "schedule": 15.0}
    assert get_settings().alert_webhook_urls == ["https://hooks.example.com/a", "https://hooks.example.com/b"]


def test_the_alerts_endpoint_filters_and_paginates(api_client, admin, sync_engine):
    failure = add_alert(sync_engine, periodic_task_id=1)
    pause = add_alert(sync_engine, kind="auto_pause", periodic_task_id=2)
    deadline = add_alert(sync_engine, kind="start_deadline_missed", periodic_task_id=2)
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE periodic_task_alerts SET delivered_at = now() WHERE id = :id"), {"id": pause})

    def ids(**params) -> list[int]:
        response = api_client.get(URL, params=params, headers=admin.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids() == [deadline, pause, failure]
    assert ids(delivered=True) == [pause]
    assert ids(delivered=False) == [deadline, failure]
    assert ids(kind="failure") == [failure]
    assert ids(periodic_task_id=2) == [deadline, pause]
    page = api_client.get(URL, params={"limit": 2}, headers=admin.headers).json()
    assert (len(page["items"]), page["has_more"]) == (2, True)
    assert api_client.get(URL, params={"kind": "meh"}, headers=admin.headers).status_code == 422


def test_a_real_worker_delivering_alerts_at_info_level_logs_no_path_of_a_webhook(admin, sync_engine, redis_clean):
    """A webhook URL's path is its secret: httpx logs every request's full URL at INFO, and a
    failing webhook's error is logged too. Neither may show the path."""
    add_alert(sync_engine)
    add_alert(sync_engine, kind="auto_pause")
    with Webhook([200, 500]) as webhook:
        empty_broker()
        # A queue of its own: an in-process worker of an earlier test (without webhooks) may
        # still be consuming the default one.
        worker = start_worker(
            "--concurrency",
            "1",
            "--queues",
            "webhook-logs",
            name="alert-worker",
            env={"ALERT_WEBHOOK_URLS": webhook.url, "LOG_LEVEL": "INFO"},
        )
        try:
            result = alert_delivery.deliver_alerts.apply_async(queue="webhook-logs").get(timeout=30)
            assert result == {"delivered": 1, "failed": 1, "given_up": 0}, result
            worker.wait_for_output("alerts: 1 delivered, 1 failed", timeout=10)
        finally:
            worker.stop()
    output = worker.output()
    assert " INFO " in output
    assert "/services/T0/B0/secret-part" not in output and "secret-part" not in output, output
