"""Publishing many task messages in one Redis round trip: how beat sends its runs.

kombu publishes one message per round trip (plus its own per-publish work), so a burst of
10,000 due runs costs 10,000 round trips. `BatchPublisher.publish` builds each message with
Celery's own `amqp.as_task_v2` (the message `send_task` would write) and writes them all, with
their task-sent events, in one pipeline. It fires Celery's `before_task_publish` and
`after_task_publish` signals as `send_task` does.

It covers the common case: a message that goes straight to its queue (a direct queue, not
both an exchange and a routing key set), at priority 0, JSON, uncompressed. Any other message
is handed to kombu (`Celery.send_task`) one by one, so nothing is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from celery import Celery, signals
from celery.result import denied_join_result
from kombu import Exchange, Queue

from erp.core import broker_wire


@dataclass(frozen=True)
class OutgoingTask:
    """One task message to publish: what `Celery.send_task` would be called with."""

    task_name: str
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    expires_seconds: float | None = None

    def send_task_options(self) -> dict[str, Any]:
        options = {
            "queue": self.queue,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "priority": self.priority,
            "expires": self.expires_seconds,
        }
        return {name: value for name, value in options.items() if value is not None}


def routed_queue(app: Celery, task_name: str, queue: str | None) -> Queue | None:
    """The queue `send_task` puts a task in: the given one, else its route's, else the default.

    A queue name the app does not know is the queue Celery would create and declare for it
    (`task_create_missing_queues`), or None when Celery would refuse it.
    """
    if not queue:
        routed: Queue = app.amqp.router.route({}, task_name)["queue"]
        return routed
    if queue in app.amqp.queues:
        known: Queue = app.amqp.queues[queue]
        return known
    return Queue(queue, Exchange(queue), queue) if app.conf.task_create_missing_queues else None


def send_with_kombu(app: Celery, task: OutgoingTask) -> None:
    """Publish one message through `Celery.send_task` (kombu), one round trip."""
    # Nobody waits on these results: saying so keeps Celery's Redis backend from subscribing to
    # each (celery#4261): a round trip per message, and an unsubscribe in AsyncResult.__del__
    # that could swallow the SystemExit of beat's SIGTERM handler.
    with denied_join_result():
        app.send_task(
            task.task_name,
            args=task.args,
            kwargs=task.kwargs,
            task_id=task.task_id,
            headers=task.headers,
            **task.send_task_options(),
        )


class BatchPublisher:
    def __init__(self, app: Celery, client: redis.Redis) -> None:
        self._app = app
        self._client = client
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self._sent_channel = broker_wire.event_channel(int(db), "task.sent")
        # The app's queues and routes do not change while it runs: one answer per routing.
        self._queues: dict[tuple[str, str | None, str | None, str | None, int | None], Queue | None] = {}

    def publish(self, tasks: Sequence[OutgoingTask], *, now: datetime | None = None) -> None:
        """Publish every message (one round trip for those on the direct path).

        Raises the broker's errors; then none of the pipelined messages may be assumed sent.
        """
        pipeline = self._client.pipeline(transaction=False)
        direct: list[tuple[OutgoingTask, tuple[Any, ...], dict[str, Any], str]] = []
        through_kombu: list[OutgoingTask] = []
        for task in tasks:
            queue = self._direct_queue(task)
            if queue is None:
                through_kombu.append(task)
                continue
            headers, properties, body, sent_event = self._app.amqp.as_task_v2(
                task.task_id,
                task.task_name,
                task.args,
                task.kwargs,
                expires=task.expires_seconds,
                now=now,
                create_sent_event=self._app.conf.task_send_sent_event,
            )
            headers.update(task.headers)
            if task.expires_seconds is not None:
                properties["expiration"] = max(task.expires_seconds, 0)
            if signals.before_task_publish.receivers:
                signals.before_task_publish.send(
                    sender=task.task_name,
                    body=body,
                    exchange="",
                    routing_key=queue.name,
                    declare=[queue],
                    headers=headers,
                    properties=properties,
                    retry_policy=None,
                )
            pipeline.lpush(
                queue.name,
                broker_wire.envelope(
                    body,
                    headers,
                    properties,
                    exchange="",
                    routing_key=queue.name,
                    delivery_mode=broker_wire.PERSISTENT,
                ),
            )
            if sent_event is not None:
                sent_event.update(queue=queue.name, exchange="", routing_key=queue.name)
                pipeline.publish(self._sent_channel, self._sent_event(sent_event))
            direct.append((task, body, headers, queue.name))
        if direct:
            pipeline.execute()
        for task, body, headers, queue_name in direct:
            if signals.after_task_publish.receivers:
                signals.after_task_publish.send(
                    sender=task.task_name, body=body, headers=headers, exchange="", routing_key=queue_name
                )
        for task in through_kombu:
            send_with_kombu(self._app, task)

    def _direct_queue(self, task: OutgoingTask) -> Queue | None:
        """The queue the message goes straight to, or None when kombu must route it."""
        key = (task.task_name, task.queue, task.exchange, task.routing_key, task.priority)
        if key not in self._queues:
            self._queues[key] = self._find_direct_queue(task)
        return self._queues[key]

    def _find_direct_queue(self, task: OutgoingTask) -> Queue | None:
        conf = self._app.conf
        if task.priority or conf.task_compression or conf.task_serializer != "json":
            return None
        queue = routed_queue(self._app, task.task_name, task.queue)
        if queue is None or queue.exchange.type != "direct" or (task.exchange and task.routing_key):
            return None
        if getattr(queue, "max_priority", None) or queue.exchange.delivery_mode not in (None, 2, "persistent"):
            return None
        return queue

    def _sent_event(self, fields: dict[str, Any]) -> str:
        return broker_wire.task_sent_event(fields, self._app.clock.forward())
