"""The message of one run of a periodic task, built in one place for beat and for "run now".

Every run carries the headers `periodic_task_name` and `periodic_task_scheduled_at`, and the
task's own headers, routing and expiry. A run beat sends has an id derived from the periodic
task and its scheduled time (`periodic_run_id`), so the same run always has the same id; a run
started by hand gets a random id and so never collides with beat's.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from kombu import Queue

from erp.core.batch_publisher import OutgoingTask, routed_queue, send_with_kombu
from erp.core.broker_wire import PERIODIC_NAME_HEADER, PERIODIC_SCHEDULED_AT_HEADER
from erp.tasks.scheduler_models import PeriodicTaskDB

PERIODIC_RUN_NAMESPACE = uuid.UUID("3f1d6c2e-8a57-4b0e-9d7e-6f2b9c4a1e55")


def periodic_run_id(periodic_task_id: int, scheduled_at: datetime) -> str:
    """The message id of one scheduled run: the same task and time always give the same id."""
    moment = scheduled_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(uuid.uuid5(PERIODIC_RUN_NAMESPACE, f"{periodic_task_id}@{moment}"))


def periodic_headers(task: PeriodicTaskDB, scheduled_at: datetime) -> dict[str, Any]:
    return {
        **task.get_headers(),
        PERIODIC_NAME_HEADER: task.name,
        PERIODIC_SCHEDULED_AT_HEADER: scheduled_at.isoformat(),
    }


def outgoing_run(task: PeriodicTaskDB, *, run_id: str, scheduled_at: datetime) -> OutgoingTask:
    """The message of one run of `task`, with the task's own arguments, headers and routing."""
    return OutgoingTask(
        task_name=task.task,
        task_id=run_id,
        args=task.get_args(),
        kwargs=task.get_kwargs(),
        headers=periodic_headers(task, scheduled_at),
        queue=task.queue,
        exchange=task.exchange,
        routing_key=task.routing_key,
        priority=task.priority,
        expires_seconds=task.expire_seconds,
    )


def send_periodic_run(app: Celery, task: PeriodicTaskDB, *, run_id: str, scheduled_at: datetime) -> None:
    """Publish one run of `task` through kombu (a run started by hand)."""
    send_with_kombu(app, outgoing_run(task, run_id=run_id, scheduled_at=scheduled_at))


def routing_problem(
    app: Celery, task_name: str, *, queue: str | None, exchange: str | None, routing_key: str | None
) -> str | None:
    """Why a message with this routing would reach no queue, or None if it is delivered.

    Follows what Celery 5.3's send_task does with these options: the task goes to its queue (the
    row's, else its route's, else the default); a direct queue's message goes straight to the
    queue unless both an exchange and a routing key are given, in which case it goes to whatever
    is bound to that exchange under that key. kombu drops a message nothing is bound to, and
    beat would count it as sent: such routing is refused when saved, and disables a row that
    has it.
    """
    queues = app.amqp.queues
    target = routed_queue(app, task_name, queue)
    if target is None:
        return f"queue {queue!r} is not one of this app's queues ({', '.join(sorted(queues))})"
    if (not exchange or not routing_key) and target.exchange.type == "direct":
        return None
    exchange_name = exchange if exchange is not None else target.exchange.name
    key = routing_key or target.routing_key or app.conf.task_default_routing_key
    bound = [candidate for candidate in (*queues.values(), target) if candidate.exchange.name == exchange_name]
    if not bound:
        known = ", ".join(sorted({candidate.exchange.name or "''" for candidate in queues.values()}))
        return f"exchange {exchange_name!r} has no queue bound to it (this app's exchanges: {known})"
    if any(_binding_matches(candidate, key) for candidate in bound):
        return None
    keys = ", ".join(sorted({str(candidate.routing_key) for candidate in bound}))
    return f"no queue is bound to exchange {exchange_name!r} with routing key {key!r} (bound keys: {keys})"


def _binding_matches(queue: Queue, routing_key: str) -> bool:
    kind = queue.exchange.type
    if kind == "fanout":
        return True
    if kind == "topic":
        return _topic_matches(str(queue.routing_key), routing_key)
    return bool(queue.routing_key == routing_key)


def _topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is one dot-separated word, `#` zero or more."""
    expression = re.escape(pattern).replace(r"\#", ".*").replace(r"\*", r"[^.]+")
    return re.fullmatch(expression, routing_key) is not None
