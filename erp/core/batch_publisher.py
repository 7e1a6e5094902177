"""Publishing many task messages in one Redis round trip: how beat sends its runs.

kombu publishes one message per round trip (plus its own per-publish work), so a burst of
10,000 due runs costs 10,000 round trips. `BatchPublisher.publish` builds the messages with
Celery's own `amqp.as_task_v2` (the message `send_task` would write), once per task name,
arguments and expiry, filling in each message's id, and writes them all, one LPUSH per queue,
with their task-sent events, in one pipeline. It fires Celery's `before_task_publish` and
`after_task_publish` signals as `send_task` does (tests/integration/test_batch_publisher.py
compares its messages with kombu's).

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
from kombu.utils.json import dumps

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


@dataclass(frozen=True)
class _MessageTemplate:
    """What every message of one task, arguments and expiry shares (see `BatchPublisher._template`)."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: tuple[Any, ...]
    payload: str  # the body serialized and base64-encoded, as the envelope holds it
    sent_event: dict[str, Any] | None


class BatchPublisher:
    def __init__(self, app: Celery, client: redis.Redis) -> None:
        self._app = app
        self._client = client
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self._sent_channel = broker_wire.event_channel(int(db), "task.sent")
        # The app's queues and routes do not change while it runs: one answer per routing.
        self._queues: dict[tuple[str, str | None, str | None, str | None, int | None], Queue | None] = {}

    def publish(self, tasks: Sequence[OutgoingTask], *, now: datetime | None = None) -> None:
        """Publish every message (one round trip for those on the direct path: one LPUSH of all
        the messages of a queue, and the task-sent events).

        Raises the broker's errors; then none of the pipelined messages may be assumed sent.
        """
        pipeline = self._client.pipeline(transaction=False)
        direct: list[tuple[OutgoingTask, tuple[Any, ...], dict[str, Any], str]] = []
        through_kombu: list[OutgoingTask] = []
        templates: dict[tuple[str, str, float | None], _MessageTemplate] = {}
        # LPUSH of many values pushes them in their order, as one LPUSH each would.
        by_queue: dict[str, list[str]] = {}
        sent_events: list[str] = []
        source = broker_wire.EventSource.here()
        for task in tasks:
            queue = self._direct_queue(task)
            if queue is None:
                through_kombu.append(task)
                continue
            template = self._template(templates, task, now)
            headers = {**template.headers, "id": task.task_id, "root_id": task.task_id, **task.headers}
            properties = {**template.properties, "correlation_id": task.task_id}
            body = template.body
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
            by_queue.setdefault(queue.name, []).append(
                broker_wire.envelope_of_payload(
                    template.payload,
                    headers,
                    properties,
                    exchange="",
                    routing_key=queue.name,
                    delivery_mode=broker_wire.PERSISTENT,
                )
            )
            if template.sent_event is not None:
                sent_event = {**template.sent_event, "uuid": task.task_id, "root_id": task.task_id}
                sent_event.update(queue=queue.name, exchange="", routing_key=queue.name)
                sent_events.append(self._sent_event(sent_event, source))
            direct.append((task, body, headers, queue.name))
        if direct:
            for queue_name, messages in by_queue.items():
                pipeline.lpush(queue_name, *messages)
            for event in sent_events:
                pipeline.publish(self._sent_channel, event)
            pipeline.execute()
        for task, body, headers, queue_name in direct:
            if signals.after_task_publish.receivers:
                signals.after_task_publish.send(
                    sender=task.task_name, body=body, headers=headers, exchange="", routing_key=queue_name
                )
        for task in through_kombu:
            send_with_kombu(self._app, task)

    def _template(
        self, templates: dict[tuple[str, str, float | None], _MessageTemplate], task: OutgoingTask, now: datetime | None
    ) -> _MessageTemplate:
        """The message of `task` as `amqp.as_task_v2` writes it, but for its id: made once per
        task name, arguments and expiry within one `publish` (whose `now` the expiry counts
        from), since a herd's messages differ in their ids and headers only. Building each
        anew (the arguments' repr and JSON, the body's base64) was over a third of a herd's time.

        Each message gets its own headers and properties, which a `before_task_publish`
        receiver may change (erp's own stamps `published_at`); the body, serialized once, and
        the values nested in the headers are the template's, shared by its messages."""
        payload = dumps((task.args, task.kwargs))
        key = (task.task_name, payload, task.expires_seconds)
        if key not in templates:
            headers, properties, body, sent_event = self._app.amqp.as_task_v2(
                task.task_id,
                task.task_name,
                task.args,
                task.kwargs,
                expires=task.expires_seconds,
                now=now,
                create_sent_event=self._app.conf.task_send_sent_event,
            )
            if task.expires_seconds is not None:
                # As kombu's producer writes it: milliseconds, as a string.
                properties["expiration"] = str(int(max(task.expires_seconds, 0) * 1000))
            templates[key] = _MessageTemplate(headers, properties, body, broker_wire.encoded_body(body), sent_event)
        return templates[key]

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

    def _sent_event(self, fields: dict[str, Any], source: broker_wire.EventSource) -> str:
        return broker_wire.task_sent_event(fields, self._app.clock.forward(), source)
