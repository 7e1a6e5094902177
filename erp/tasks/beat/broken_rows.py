"""A row beat cannot use (a schedule it cannot compute, arguments it cannot decode, routing that
reaches no queue): disabled with a readable reason, and an alert that it stopped firing; the
other rows go on."""

from __future__ import annotations

import functools
import logging

from celery import Celery
from sqlalchemy.orm import Session

from erp.tasks.beat import run_ledger
from erp.tasks.periodic_messages import routing_problem
from erp.tasks.scheduler_models import PeriodicTaskDB

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def cached_routing_problem(
    app: Celery, task_name: str, queue: str | None, exchange: str | None, routing_key: str | None
) -> str | None:
    # The app's queues do not change while beat runs: one answer per distinct routing.
    return routing_problem(app, task_name, queue=queue, exchange=exchange, routing_key=routing_key)


def disable(session: Session, task: PeriodicTaskDB, reason: str) -> None:
    logger.warning("beat: periodic task %r disabled: %s", task.name, reason, extra={"action": "row_disabled"})
    task.enabled = False
    task.next_run_at = None
    task.disabled_reason = reason
    alert_stopped(session, task, reason)


def alert_stopped(session: Session, task: PeriodicTaskDB, reason: str) -> None:
    run_ledger.add_alert(
        session,
        "stopped_firing",
        f"{task.name}: stopped firing, {reason}",
        periodic_task_id=task.id,
        periodic_task_name=task.name,
    )
