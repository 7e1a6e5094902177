"""Delivering alerts to webhooks: the task `erp.deliver_alerts`, which beat runs every 15 s.

Alerts are written where they are noticed (beat: missed deadlines, a schedule that stopped
firing; the worker: a failure, an auto-pause) into `periodic_task_alerts`. Posting them is a
worker's job, never beat's: a slow or dead webhook must not hold up a tick. Each run takes the
alerts that are due in small batches, locked with FOR UPDATE SKIP LOCKED (two runs at once
take different alerts; a worker that dies mid-batch releases its locks and the alerts are tried
again), and posts each to every URL of ALERT_WEBHOOK_URLS as JSON with a Slack-compatible
`text`. An alert every URL accepted (2xx) is delivered; otherwise it is tried again after an
exponential back-off with jitter, and after ALERT_WEBHOOK_MAX_ATTEMPTS it is given up: it stays
listed as undelivered, with its last error. Delivery is at least once: a retry posts to every
URL again, including those that had accepted it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, Row, text

from erp.core.celery_app import celery_app
from erp.core.config import Settings, get_settings
from erp.core.db import worker_sync_engine
from erp.core.errors import error_text
from erp.core.task_registry import periodic_job

logger = logging.getLogger(__name__)

TASK_NAME = "erp.deliver_alerts"
# How often beat has the alerts delivered, when webhooks are configured.
DELIVERY_EVERY_SECONDS = 15.0
# Alerts locked and posted per transaction: small, so a slow webhook holds few rows.
BATCH_SIZE = 10
# A run stops taking new batches after this long; the next run goes on.
RUN_BUDGET_SECONDS = 60.0
# The first retry comes after about this long, doubling each time, never more than the cap.
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_CAP_SECONDS = 3600.0
ERROR_LIMIT = 500

KIND_LABELS = {
    "start_deadline_missed": "missed its start deadline",
    "finish_deadline_missed": "missed its finish deadline",
    "failure": "failed",
    "auto_pause": "was paused automatically",
    "stopped_firing": "stopped firing",
}


def backoff_seconds(attempts: int, rand: random.Random | None = None) -> float:
    """How long to wait after the `attempts`-th failed attempt: exponential, capped, with jitter
    (between half and all of it) so alerts failing together do not retry together."""
    ceiling: float = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** max(0, attempts - 1))
    fraction: float = (rand or random).random()
    return ceiling * (0.5 + 0.5 * fraction)


def alert_payload(alert: Any) -> dict[str, Any]:
    """The JSON posted for one alert; `text` is what Slack (and compatible chat tools) show."""
    label = KIND_LABELS.get(alert.kind, alert.kind)
    name = alert.periodic_task_name or "a periodic task"
    created_at: datetime = alert.created_at
    return {
        "text": f"[erp] {name} {label}: {alert.message}",
        "kind": alert.kind,
        "alert_id": alert.id,
        "periodic_task_id": alert.periodic_task_id,
        "periodic_task_name": alert.periodic_task_name,
        "run_id": alert.run_id,
        "message": alert.message,
        "created_at": created_at.isoformat(),
    }


def _where(url: str) -> str:
    # A webhook URL's path is often its secret (Slack's are): errors name the host only.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


def post_everywhere(client: httpx.Client, urls: Sequence[str], payload: dict[str, Any]) -> str | None:
    """Post to every URL; None when all accepted it, else what went wrong (hosts only)."""
    problems: list[str] = []
    for url in urls:
        try:
            response = client.post(url, json=payload)
        except httpx.HTTPError as error:
            # The error's text may hold the URL (some of httpx's name it): it is masked.
            problems.append(f"{_where(url)}: {error_text(error).replace(url, _where(url))}")
            continue
        if not response.is_success:
            problems.append(f"{_where(url)}: HTTP {response.status_code}")
    return "; ".join(problems)[:ERROR_LIMIT] if problems else None


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    given_up: int = 0


CLAIM = text(
    """
    SELECT id, kind, periodic_task_id, periodic_task_name, run_id, message, created_at, attempts
    FROM periodic_task_alerts
    WHERE delivered_at IS NULL AND next_attempt_at <= now() AND attempts < :max_attempts
    ORDER BY next_attempt_at, id
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
    """
)


def _record(connection: Any, alert: Row[Any], error: str | None, max_attempts: int, report: DeliveryReport) -> None:
    attempts = alert.attempts + 1
    if error is None:
        connection.execute(
            text(
                "UPDATE periodic_task_alerts SET delivered_at = now(), attempts = :attempts, last_error = NULL"
                " WHERE id = :id"
            ),
            {"id": alert.id, "attempts": attempts},
        )
        report.delivered += 1
        return
    connection.execute(
        text(
            "UPDATE periodic_task_alerts SET attempts = :attempts, last_error = :error,"
            " next_attempt_at = now() + make_interval(secs => :delay) WHERE id = :id"
        ),
        {"id": alert.id, "attempts": attempts, "error": error, "delay": backoff_seconds(attempts)},
    )
    report.failed += 1
    if attempts >= max_attempts:
        report.given_up += 1
        logger.warning(
            "alerts: gave up alert %d after %d attempts: %s",
            alert.id,
            attempts,
            error,
            extra={"action": "alert_given_up"},
        )


def deliver_pending(
    engine: Engine,
    client: httpx.Client,
    urls: Sequence[str],
    *,
    max_attempts: int,
    batch_size: int = BATCH_SIZE,
    budget_seconds: float = RUN_BUDGET_SECONDS,
) -> DeliveryReport:
    """Post every alert that is due to every URL, a small locked batch at a time."""
    report = DeliveryReport()
    if not urls:
        return report  # no webhooks configured: alerts are only listed
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        with engine.begin() as connection:
            alerts = connection.execute(CLAIM, {"max_attempts": max_attempts, "batch": batch_size}).all()
            for alert in alerts:
                _record(connection, alert, post_everywhere(client, urls, alert_payload(alert)), max_attempts, report)
        if len(alerts) < batch_size:
            break
    if report.delivered or report.failed:
        logger.info(
            "alerts: %d delivered, %d failed (%d given up)",
            report.delivered,
            report.failed,
            report.given_up,
            extra={"action": "alerts_delivered"},
        )
    return report


@celery_app.task(name=TASK_NAME)
def deliver_alerts() -> dict[str, int]:
    """Deliver the alerts that are due (a periodic job, see `delivery_cadence`)."""
    settings = get_settings()
    with httpx.Client(timeout=settings.ALERT_WEBHOOK_TIMEOUT_SECONDS) as client:
        report = deliver_pending(
            worker_sync_engine(),
            client,
            settings.alert_webhook_urls,
            max_attempts=settings.ALERT_WEBHOOK_MAX_ATTEMPTS,
        )
    return {"delivered": report.delivered, "failed": report.failed, "given_up": report.given_up}


def delivery_cadence(settings: Settings) -> float | None:
    """Every few seconds, and only with webhooks configured: without them there is nothing to
    deliver, and no message every 15 seconds to do nothing. A worker delivers, never beat, so a
    slow webhook never holds a tick up."""
    return DELIVERY_EVERY_SECONDS if settings.alert_webhook_urls else None


periodic_job(TASK_NAME, every=delivery_cadence)
