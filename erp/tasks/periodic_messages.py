"""The message of one run of a periodic task, built in one place for beat and for "run now".

Every run carries the headers `periodic_task_name` and `periodic_task_scheduled_at`, and the
task's own headers, routing and expiry. A run beat sends has an id derived from the periodic
task and its scheduled time (`periodic_run_id`), so the same run always has the same id; a run
started by hand gets a random id and so never collides with beat's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.result import denied_join_result
from kombu import Producer

from erp.tasks.scheduler_models import PeriodicTaskDB

PERIODIC_RUN_NAMESPACE = uuid.UUID("3f1d6c2e-8a57-4b0e-9d7e-6f2b9c4a1e55")
NAME_HEADER = "periodic_task_name"
SCHEDULED_AT_HEADER = "periodic_task_scheduled_at"


def periodic_run_id(periodic_task_id: int, scheduled_at: datetime) -> str:
    """The message id of one scheduled run: the same task and time always give the same id."""
    moment = scheduled_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(uuid.uuid5(PERIODIC_RUN_NAMESPACE, f"{periodic_task_id}@{moment}"))


def periodic_headers(task: PeriodicTaskDB, scheduled_at: datetime) -> dict[str, Any]:
    return {**(task.headers or {}), NAME_HEADER: task.name, SCHEDULED_AT_HEADER: scheduled_at.isoformat()}


def send_periodic_run(
    app: Celery,
    task: PeriodicTaskDB,
    *,
    run_id: str,
    scheduled_at: datetime,
    args: list[Any],
    kwargs: dict[str, Any],
    producer: Producer | None = None,
) -> None:
    """Publish one run of `task` through kombu, with the task's own options."""
    # Nobody waits on a periodic run's result. Saying so keeps Celery's Redis backend from
    # subscribing to every run's result (celery#4261): a round trip per run, and an unsubscribe
    # in AsyncResult.__del__ that could swallow the SystemExit of beat's SIGTERM handler.
    with denied_join_result():
        app.send_task(
            task.task,
            args=args,
            kwargs=kwargs,
            task_id=run_id,
            headers=periodic_headers(task, scheduled_at),
            producer=producer,
            **task.message_options(),
        )
